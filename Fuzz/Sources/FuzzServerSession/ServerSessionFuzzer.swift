// Harness 4: a whole server session. The input becomes a client's byte stream (valid frames mostly, see
// WireScript), delivered to the server's real connection handling over an in-memory channel and a real library
// folder on disk.
//
// Invariants: the server never traps; nothing is created or changed outside the library; no staging file survives
// the session but an upload kept to be resumed (version 4), whose record must name a STOR of the input and give the
// length and CRC-32 of the bytes kept; every file it committed carries a name the input asked to STOR and the length
// and CRC-32 of an END the input sent (an unverified upload is never committed).
import FerryProtocol
import FerryServer
import Foundation
import FuzzSupport
import Logging
import NIOCore

private let sandbox = Sandbox(label: "server")

private let server: FerryServer = {
    nonisolated(unsafe) var made: FerryServer?
    runBlocking {
        // Kept uploads are checked and removed after each input; the limit only bounds what one input may keep.
        guard
            let library = try? await FileLibrary.open(
                at: sandbox.inner.path,
                keeping: KeptUploadPolicy(byteLimit: 8 << 20)
            )
        else { return }
        var configuration = ServerConfiguration()
        configuration.maximumFileSize = 1 << 20
        made = FerryServer(
            configuration: configuration,
            library: library,
            logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    }
    guard let made else { fatalError("cannot open the fuzzing library at \(sandbox.inner.path)") }
    return made
}()

/// Runs one empty session before fuzzing starts, so that process-wide singletons (NIO's thread pools, this file's
/// globals) are created here and not mistaken for leaks of the first input.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    var empty: [UInt8] = [4, 0, 0]
    _ = fuzzServerSession(&empty, empty.count)
    return 0
}

/// The server's folder of checksum tables: kept between inputs, so a later input may meet a table for a file an
/// earlier one stored (tables must then be recognised as stale).
private let checksumFolder = ".ferry-checksums"
/// The server's folder of staging areas, made when the library is opened: kept between inputs, and this server's
/// area in it empty after each session.
private let stagingFolder = ".ferry-staging"

/// Uploads kept to be resumed, in the staging folder.
private let keptFolder = ".kept"

/// Every kept upload has a record that names a STOR of the input and gives the length and CRC-32 of its bytes (a
/// committed one's record no bytes, and a name the input stored); then they are removed, so inputs stay independent.
private func checkKeptUploads(_ script: WireScript) {
    let folder = "\(stagingFolder)/\(keptFolder)"
    let names = sandbox.contents(of: folder)
    for name in names where !name.contains(".") {
        precondition(names.contains(name + ".upload"), "kept bytes without a record: \(name)")
        guard let summary = sandbox.summary(of: "\(folder)/\(name)") else { continue }
        let record =
            (try? String(contentsOf: sandbox.inner.appendingPathComponent("\(folder)/\(name).upload"), encoding: .utf8))
            ?? ""
        precondition(record.contains("\nstate receiving\n"), "kept bytes of an upload not being received: \(record)")
        precondition(record.contains("\nkept \(summary.length)\n"), "the record keeps another length: \(record)")
        precondition(
            record.contains("\ncrc32 \(String(summary.crc32, radix: 16))\n"),
            "the record's CRC-32 is not its bytes': \(record)"
        )
    }
    for name in names where name.hasSuffix(".upload") {
        let record =
            (try? String(contentsOf: sandbox.inner.appendingPathComponent("\(folder)/\(name)"), encoding: .utf8)) ?? ""
        let stored = record.split(separator: "\n").first { $0.hasPrefix("name ") }.map { String($0.dropFirst(5)) }
        precondition(stored.map(script.storeNames.contains) ?? false, "a kept upload the input never began: \(record)")
        try? FileManager.default.removeItem(at: sandbox.inner.appendingPathComponent("\(folder)/\(name)"))
        try? FileManager.default.removeItem(
            at: sandbox.inner.appendingPathComponent("\(folder)/\(name.dropLast(".upload".count))")
        )
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzServerSession(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    let script = WireScript(&input)
    let server = server
    sandbox.reset(keeping: [checksumFolder, stagingFolder])
    runBlocking {
        guard let connection = try? await InMemoryConnection.make() else { fatalError("no in-memory channel") }
        async let served: Void = server.serve(connection.asyncChannel)
        await connection.deliver(script.reads)
        await served
        await connection.tearDown()
    }
    sandbox.checkNothingEscaped()
    // The server's own staging area stays (it lives as long as the server); what is in it must not.
    let staged = sandbox.contents(of: stagingFolder).filter { $0 != keptFolder }.flatMap { area in
        sandbox.contents(of: "\(stagingFolder)/\(area)").filter { $0 != ".lock" }.map { "\(area)/\($0)" }
    }
    precondition(staged.isEmpty, "a staging file survived the session: \(staged)")
    checkKeptUploads(script)
    for name in sandbox.contents() where name != checksumFolder && name != stagingFolder {
        precondition(!name.hasPrefix("."), "a hidden file appeared in the library: \(name)")
        precondition(script.storeNames.contains(name), "a file the input never stored: \(name)")
        guard let summary = sandbox.summary(of: name) else { continue }
        precondition(script.declaredEnds.contains(summary), "an unverified upload was committed: \(name)")
    }
    return 0
}
