import Foundation
import Testing

@testable import FerryServer

#if canImport(Glibc)
import Glibc
#endif

/// The clean-up of kept uploads, run on a folder of records: however many uploads clients leave, the folder keeps at
/// most ``KeptUploads/maximumCount``, the oldest going first.
@Suite("Kept uploads' limits")
struct KeptUploadLimitsTests {
    @Test func theOldestRecordsGoBeyondTheCountLimit() throws {
        let library = try PinnedFolder.open(Scratch.makeDirectory("library").path)
        let kept = KeptUploads(in: library, lifetime: .seconds(3600), byteLimit: 1 << 40, checkpointInterval: 1 << 20)
        let folder = try kept.folder()
        let now = Int(time(nil))
        let extra = 5
        for index in 0..<(KeptUploads.maximumCount + extra) {
            let name = String(format: "%064x", index)
            let record = KeptUploadRecord(
                state: .committed,
                name: "file-\(index)",
                size: 1,
                overwrite: false,
                user: nil,
                kept: 1,
                crc32: 0
            )
            #expect(KeptUploads.writeRecord(record, name, in: folder) == nil)
            // The first ones written longest ago.
            var times = [
                timespec(tv_sec: now - 1000 + index / 1000, tv_nsec: 0),
                timespec(tv_sec: now - 1000 + index, tv_nsec: 0),
            ]
            #expect(utimensat(folder.descriptor, name + KeptUploads.recordSuffix, &times, 0) == 0)
        }
        #expect(kept.sweep() == extra)
        let left = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        #expect(left.count == KeptUploads.maximumCount)
        for index in 0..<extra {
            #expect(!left.contains(String(format: "%064x", index) + KeptUploads.recordSuffix), "the oldest went")
        }
    }
}
