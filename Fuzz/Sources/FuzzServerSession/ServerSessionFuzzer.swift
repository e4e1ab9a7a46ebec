// Harness 4: a whole server session. The input becomes a client's byte stream (valid frames mostly, see
// WireScript), delivered to the server's real connection handling over an in-memory channel and a real library
// folder on disk.
//
// Invariants: the server never traps; nothing is created or changed outside the library; no staging file survives
// the session; every file it committed carries a name the input asked to STOR and the length and CRC-32 of an END
// the input sent (an unverified upload is never committed).
import FerryProtocol
import FerryServer
import FuzzSupport
import Logging
import NIOCore

private let sandbox = Sandbox(label: "server")

private let server: FerryServer = {
    nonisolated(unsafe) var made: FerryServer?
    runBlocking {
        guard let library = try? await FileLibrary.open(at: sandbox.inner.path) else { return }
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
    let staged = sandbox.contents(of: stagingFolder).flatMap { area in
        sandbox.contents(of: "\(stagingFolder)/\(area)").filter { $0 != ".lock" }.map { "\(area)/\($0)" }
    }
    precondition(staged.isEmpty, "a staging file survived the session: \(staged)")
    for name in sandbox.contents() where name != checksumFolder && name != stagingFolder {
        precondition(!name.hasPrefix("."), "a hidden file appeared in the library: \(name)")
        precondition(script.storeNames.contains(name), "a file the input never stored: \(name)")
        guard let summary = sandbox.summary(of: name) else { continue }
        precondition(script.declaredEnds.contains(summary), "an unverified upload was committed: \(name)")
    }
    return 0
}
