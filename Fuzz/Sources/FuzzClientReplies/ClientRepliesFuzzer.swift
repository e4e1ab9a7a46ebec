// Harness 5: the client library facing arbitrary server replies (valid frames mostly, see WireScript), over an
// in-memory channel, downloading into and uploading from a real folder.
//
// Invariants: the client never traps; nothing appears outside its folder; no temporary download survives, but for
// a cut download kept to resume, whose record must give the length and CRC-32 of the bytes kept; the download
// target either does not exist or holds a file whose length and CRC-32 match an END the server sent; the files it
// uploads are never modified; a record of an upload the server keeps (version 4) names that upload and a token.
import FerryClient
import FerryProtocol
import Foundation
import FuzzSupport
import NIOCore

private let sandbox = Sandbox(label: "client")
private let uploadName = "upload.bin"
private let uploadBytes = Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
private let uploadSummary = EndOfData(length: 3000, crc32: CRC32.checksum([UInt8](uploadBytes)))
/// Streamed (more than 256 KiB), so READY's offset and token are in play.
private let largeName = "large.bin"
private let largeBytes = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
private let largeSummary = EndOfData(length: 300_000, crc32: CRC32.checksum([UInt8](largeBytes)))
/// Where the client records the tokens of uploads the server keeps.
private let recordsName = ".uploads"

/// Runs one empty session before fuzzing starts, so that process-wide singletons (NIO's thread pools, this file's
/// globals) are created here and not mistaken for leaks of the first input.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    var empty: [UInt8] = [4, 0, 0]
    _ = fuzzClientReplies(&empty, empty.count)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzClientReplies(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    let operations = input.byte()
    let script = WireScript(&input)
    sandbox.reset(keeping: [uploadName, largeName])
    let upload = sandbox.inner.appendingPathComponent(uploadName)
    if sandbox.summary(of: uploadName) != uploadSummary {
        try? uploadBytes.write(to: upload)
    }
    let large = sandbox.inner.appendingPathComponent(largeName)
    if sandbox.summary(of: largeName) != largeSummary {
        try? largeBytes.write(to: large)
    }
    let records = sandbox.inner.appendingPathComponent(recordsName).path
    let target = sandbox.inner.appendingPathComponent("target").path
    if let transcript = ProcessInfo.processInfo.environment["FERRY_FUZZ_TRANSCRIPT"] {
        // What the main package's FuzzResultTests replays over a real socket: the operations byte, then the
        // server's byte stream.
        try? Data([operations] + script.stream).write(to: URL(fileURLWithPath: transcript))
    }
    runBlocking {
        guard let connection = try? await InMemoryConnection.make() else { fatalError("no in-memory channel") }
        await connection.deliver(script.reads)
        _ = try? await FerryClient.withConnection(over: connection.asyncChannel, server: "fuzz") { client in
            // Up to four operations, chosen by the input, each allowed to fail.
            for step in 0..<4 {
                switch (operations >> (2 * step)) & 3 {
                case 0: _ = try? await client.list()
                case 1: _ = try? await client.get("file", to: target)
                case 2:
                    try? await client.put(
                        [.init(source: upload.path, name: "remote"), .init(source: large.path, name: "remote-large")],
                        resume: ResumePolicy(keptUploadsFolder: records),
                        completed: { _, _ in }
                    )
                default: _ = try? await client.get("file", to: target, overwrite: true)
                }
            }
        }
        await connection.tearDown()
    }
    sandbox.checkNothingEscaped()
    for name in sandbox.contents() {
        switch name {
        case uploadName:
            precondition(sandbox.summary(of: uploadName) == uploadSummary, "the uploaded file changed")
        case largeName:
            precondition(sandbox.summary(of: largeName) == largeSummary, "the uploaded file changed")
        case recordsName:
            for record in sandbox.contents(of: recordsName) {
                let text =
                    (try? String(
                        contentsOf: sandbox.inner.appendingPathComponent("\(recordsName)/\(record)"),
                        encoding: .utf8
                    )) ?? ""
                precondition(
                    text.contains("\nserver fuzz\n") && text.hasSuffix("\nname remote-large\n")
                        && text.contains("\ntoken "),
                    "an upload's record that is not the large upload's: \(text)"
                )
            }
        case "target":
            guard let summary = sandbox.summary(of: name) else { continue }
            precondition(script.declaredEnds.contains(summary), "an unverified download was kept")
        case ".target.ferry-partial":
            // A cut download kept to resume: only with its record, which must describe its bytes.
            precondition(sandbox.contents().contains(".target.ferry-partial.meta"), "kept bytes without a record")
        case ".target.ferry-partial.meta":
            checkKeptPartial()
        default:
            preconditionFailure("an unexpected file was left behind: \(name)")
        }
    }
    return 0
}

/// The record of a kept partial download names as many bytes as the partial file holds at least, and their CRC-32.
private func checkKeptPartial() {
    let folder = sandbox.inner
    guard
        let record = try? String(
            contentsOf: folder.appendingPathComponent(".target.ferry-partial.meta"),
            encoding: .utf8
        )
    else { preconditionFailure("a kept download's record cannot be read") }
    var fields: [Substring: Substring] = [:]
    for line in record.split(separator: "\n") {
        guard let space = line.firstIndex(of: " ") else { continue }
        fields[line[..<space]] = line[line.index(after: space)...]
    }
    guard let kept = fields["kept"].flatMap({ Int($0) }), let crc = fields["crc32"].flatMap({ UInt32($0, radix: 16) }),
        let bytes = try? Data(contentsOf: folder.appendingPathComponent(".target.ferry-partial"))
    else { preconditionFailure("a kept download's record is incomplete, or its bytes are missing: \(record)") }
    precondition(kept <= bytes.count, "the record keeps more bytes than the partial file holds")
    precondition(CRC32.checksum([UInt8](bytes.prefix(kept))) == crc, "the record's CRC-32 is not its bytes'")
}
