import FerryTransport
import Foundation
import NIOCore
import Testing

/// The small-file paths write, flush and publish a whole group in one job, each file by its name in a folder
/// opened once for the group: a group's files may still lie in several folders, and one that cannot be used fails
/// only its own files.
@Suite("Group commits")
struct GroupPublishTests {
    @Test func eachFileOfAGroupIsPublishedInItsOwnFolderOrRefusedAlone() throws {
        let scratch = Scratch.makeDirectory("group")
        let first = scratch.appendingPathComponent("first").path
        let second = scratch.appendingPathComponent("second").path
        for folder in [first, second] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        try Data([1]).write(to: URL(fileURLWithPath: "\(second)/taken"))
        try Data([2]).write(to: URL(fileURLWithPath: "\(second)/replaced"))

        func file(_ folder: String, _ name: String, _ byte: UInt8, replacing: Bool = false) -> BlockingFileIO.GroupFile
        {
            BlockingFileIO.GroupFile(
                bytes: ByteBuffer(bytes: [UInt8](repeating: byte, count: 4096)),
                temporary: "\(folder)/.\(name).part",
                destination: "\(folder)/\(name)",
                replacing: replacing
            )
        }
        let group = [
            file(first, "a", 10),
            file(second, "taken", 11),
            file(scratch.appendingPathComponent("missing").path, "b", 12),
            file(second, "replaced", 13, replacing: true),
            file(first, "d", 15),
            // A name that begins with a combining mark: with the `/` before it, one character of the path.
            file(first, "\u{301}e", 16),
        ]
        let outcomes = BlockingFileIO.publishGroup(group)

        #expect(outcomes[0] == nil)
        guard case .publish(EEXIST)? = outcomes[1] else {
            Issue.record("a taken name is refused: \(String(describing: outcomes[1]))")
            return
        }
        guard case .create(let missing)? = outcomes[2] else {
            Issue.record("a missing folder fails that file only: \(String(describing: outcomes[2]))")
            return
        }
        #expect(missing.code == ENOENT)
        #expect(outcomes[3] == nil && outcomes[4] == nil && outcomes[5] == nil)
        let expected: [(String, UInt8)] = [
            ("\(first)/a", 10), ("\(second)/taken", 1), ("\(second)/replaced", 13), ("\(first)/d", 15),
            ("\(first)/\u{301}e", 16),
        ]
        for (path, byte) in expected {
            let count = byte < 10 ? 1 : 4096
            #expect(FileManager.default.contents(atPath: path) == Data(repeating: byte, count: count), "\(path)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: first).sorted() == ["a", "d", "\u{301}e"])
        #expect(!FileManager.default.fileExists(atPath: "\(first)/e"), "the combining mark stayed in the name")

        // Read back as a group reads them: by name in the folder opened once.
        var folders = OpenFolders()
        for (path, byte) in [("\(first)/\u{301}e", UInt8(16)), ("\(first)/a", 10)] {
            let (folder, name) = folders.locate(path)
            guard
                case .contents(let bytes, _) = BlockingFileIO.readSmallFile(
                    at: name,
                    in: folder,
                    upTo: 8192,
                    followingLinks: false
                )
            else {
                Issue.record("\(path) could not be read")
                continue
            }
            #expect(Array(bytes.readableBytesView) == [UInt8](repeating: byte, count: 4096), "\(path)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: second).sorted() == ["replaced", "taken"])
        #expect(!FileManager.default.fileExists(atPath: scratch.appendingPathComponent("missing").path))
    }
}
