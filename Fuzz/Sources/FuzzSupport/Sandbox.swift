import FerryProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A private folder per fuzzing process, checked after every input: nothing may appear outside the folder the code
/// under test was given, and every file inside must be one the input legitimately completed.
public struct Sandbox: Sendable {
    /// The folder that holds only `inner`: anything else appearing here escaped.
    public let outer: URL
    /// The folder the code under test works in.
    public let inner: URL

    public init(label: String) {
        self.outer = FileManager.default.temporaryDirectory
            .appendingPathComponent("ferry-fuzz-\(label)-\(ProcessInfo.processInfo.processIdentifier)")
        self.inner = self.outer.appendingPathComponent("work")
        try? FileManager.default.removeItem(at: self.outer)
        try? FileManager.default.createDirectory(at: self.inner, withIntermediateDirectories: true)
    }

    public func reset(keeping kept: Set<String> = []) {
        for name in self.contents() where !kept.contains(name) {
            try? FileManager.default.removeItem(at: self.inner.appendingPathComponent(name))
        }
    }

    public func contents() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: self.inner.path)) ?? []
    }

    /// The names in a folder inside the inner one (none if it is missing).
    public func contents(of folder: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: self.inner.appendingPathComponent(folder).path)) ?? []
    }

    /// Traps unless the outer folder holds only the inner one.
    public func checkNothingEscaped() {
        let outside = (try? FileManager.default.contentsOfDirectory(atPath: self.outer.path)) ?? []
        precondition(outside == ["work"], "a file appeared outside the folder: \(outside)")
    }

    /// The length and CRC-32 of a file in the inner folder, read with plain system calls (FoundationEssentials'
    /// `FileManager.contents(atPath:)` leaks its buffer for an empty file, which LeakSanitizer rightly reports).
    public func summary(of name: String) -> EndOfData? {
        let descriptor = open(self.inner.appendingPathComponent(name).path, O_RDONLY | O_NOFOLLOW)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var crc = CRC32()
        var length: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            buffer.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
            length += UInt64(count)
        }
        return EndOfData(length: length, crc32: crc.value)
    }
}
