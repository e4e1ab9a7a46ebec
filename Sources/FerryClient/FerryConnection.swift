public import FerryProtocol
import FerryTransport
import NIOCore
import _NIOFileSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One open session with a server, used by one task at a time (the scope of ``FerryClient/withConnection(_:)``).
///
/// Each operation runs a whole request: LIST, RETR or STOR. A request error (no such file, file exists…) leaves the
/// connection usable; a broken connection makes every later call fail with ``FerryClientError/connectionLost(_:)``.
public final class FerryConnection {
    private var reader: MessageReader
    private var writer: MessageWriter
    private let server: String
    private var broken: String?

    /// What this client announces: it accepts 1 MiB frames and files of any size.
    static let hello = Hello(
        minimumVersion: Handshake.supportedVersions.lowerBound,
        maximumVersion: Handshake.supportedVersions.upperBound,
        maximumFramePayload: UInt64(ProtocolLimits.defaultMaximumFramePayload),
        maximumFileSize: .max
    )

    init(reader: MessageReader, writer: MessageWriter, server: String) {
        self.reader = reader
        self.writer = writer
        self.server = server
    }

    // MARK: - Handshake

    func handshake() async throws {
        try await self.guarded {
            // A server that is not Ferry may answer and close before our greeting is out: what it said, read
            // next, tells more than the failed write.
            try? await self.writer.writeMagic(then: .hello(Self.hello))
            let isFerry: Bool
            do {
                isFerry = try await self.reader.readMagic()
            } catch TransportError.connectionClosed {
                throw FerryClientError.notAFerryServer(server: self.server)
            }
            guard isFerry else { throw FerryClientError.notAFerryServer(server: self.server) }
            switch try await self.reader.next() {
            case .hello(let hello):
                try Handshake.validate(hello)
                _ = try Handshake.negotiateVersion(local: Self.hello, remote: hello)
                self.reader.maximumPayloadLength = ProtocolLimits.defaultMaximumFramePayload
                self.writer.peerMaximumPayloadLength = Int(clamping: min(hello.maximumFramePayload, UInt64(Int32.max)))
                self.serverMaximumFileSize = hello.maximumFileSize
            case .error(let reply):
                throw FerryClientError.refused(reply)
            case let other:
                throw FerryProtocolError.unexpected(other?.frameType ?? .hello, in: "instead of the server's HELLO")
            }
        }
    }

    /// The largest upload the server accepts, from its HELLO.
    public private(set) var serverMaximumFileSize: UInt64 = .max

    // MARK: - LIST

    /// The library's files, sorted by name.
    public func list() async throws -> [ListEntry] {
        try await self.guarded {
            try await self.writer.write(.list)
            var entries: [ListEntry] = []
            while true {
                switch try await self.nextReply() {
                case .listEntries(let batch):
                    entries += batch
                case .listEnd(let end):
                    guard end.count == UInt64(entries.count) else {
                        throw FerryProtocolError(
                            .malformedPayload,
                            "LIST_END counts \(end.count) entries, \(entries.count) arrived"
                        )
                    }
                    return entries
                case let other:
                    throw FerryProtocolError.unexpected(other.frameType, in: "in a listing")
                }
            }
        }
    }

    // MARK: - RETR

    /// Downloads `name` into `destination`, through a temporary file beside it that is renamed over the
    /// destination only once the length and the whole-file CRC-32 match what the server declared.
    ///
    /// - Parameters:
    ///   - overwrite: replace an existing local file; without it an existing file is an error and is never touched.
    ///   - progress: called with (bytes received, bytes expected) after each chunk.
    /// - Returns: the number of bytes stored.
    @discardableResult
    public func get(
        _ name: String,
        to destination: String,
        overwrite: Bool = false,
        progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) async throws -> UInt64 {
        try Self.validateName(name)
        let target = FilePath(destination)
        if !overwrite, Self.localItemExists(target) {
            throw FerryClientError.localFile(
                "'\(destination)' already exists locally; not replaced (use --force to replace it)"
            )
        }
        return try await self.guarded {
            try await self.writer.write(.retrieve(RetrieveRequest(name: name)))
            let info: FerryProtocol.FileInfo
            switch try await self.nextReply() {
            case .fileInfo(let announced) where announced.offset == 0:
                info = announced
            case .fileInfo(let announced):
                // Only the tail would arrive, and be "verified" as if it were the file.
                throw FerryProtocolError.malformed(
                    .fileInfo,
                    "FILE_INFO starts at \(announced.offset); 0 was asked for"
                )
            case let other:
                throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to RETR")
            }
            let download = try await LocalDownload.create(beside: target)
            do {
                let length = try await self.receive(
                    into: download,
                    expectedLength: info.size - info.offset,
                    progress: progress
                )
                try await download.commit(to: target, overwrite: overwrite)
                return length
            } catch {
                await download.discard()
                throw error
            }
        }
    }

    private func receive(
        into download: LocalDownload,
        expectedLength: UInt64,
        progress: (UInt64, UInt64) -> Void
    ) async throws -> UInt64 {
        var transfer = IncomingTransfer(expectedLength: expectedLength)
        progress(0, expectedLength)
        while true {
            switch try await self.nextReply() {
            case .data(let chunk):
                do {
                    try transfer.receive(chunk)
                } catch {
                    // The server sends more than it announced: it cannot be trusted with the rest either.
                    throw FerryProtocolError(.malformedPayload, "\(error)")
                }
                try await download.write(chunk.bytes)
                progress(transfer.receivedLength, expectedLength)
            case .end(let end):
                do {
                    try transfer.verify(end)
                } catch {
                    throw FerryClientError.verificationFailed(error.description)
                }
                return transfer.receivedLength
            case let other:
                throw FerryProtocolError.unexpected(other.frameType, in: "during a download")
            }
        }
    }

    // MARK: - STOR

    /// Uploads the local file at `source` as `name`. The server commits it only after verifying its length and
    /// CRC-32; it replaces an existing file only with `overwrite`.
    ///
    /// - Returns: the number of bytes stored.
    @discardableResult
    public func put(
        _ source: String,
        as name: String,
        overwrite: Bool = false,
        progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) async throws -> UInt64 {
        try Self.validateName(name)
        let handle: ReadFileHandle
        let size: UInt64
        do {
            handle = try await FileSystem.shared.openFile(
                forReadingAt: FilePath(source),
                options: .init(closeOnExec: true)
            )
            let info = try await handle.info()
            guard info.type == .regular else {
                try? await handle.closeRegardlessOfCancellation()
                throw FerryClientError.localFile("'\(source)' is not a regular file")
            }
            size = UInt64(max(info.size, 0))
        } catch let error as FerryClientError {
            throw error
        } catch {
            throw FerryClientError.localFile("cannot read '\(source)': \(Self.describe(error))")
        }
        let options: StoreOptions = overwrite ? [.overwrite] : []
        let outcome: Result<UInt64, any Error>
        do {
            outcome = .success(
                try await self.upload(
                    handle,
                    size: size,
                    as: name,
                    options: options,
                    source: source,
                    progress: progress
                )
            )
        } catch {
            outcome = .failure(error)
        }
        try? await handle.closeRegardlessOfCancellation()
        return try outcome.get()
    }

    private func upload(
        _ handle: ReadFileHandle,
        size: UInt64,
        as name: String,
        options: StoreOptions,
        source: String,
        progress: (UInt64, UInt64) -> Void
    ) async throws -> UInt64 {
        try await self.guarded {
            try await self.writer.write(.store(StoreRequest(name: name, size: size, options: options)))
            switch try await self.nextReply() {
            case .ready:
                break
            case let other:
                throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to STOR")
            }
            progress(0, size)
            let transfer: OutgoingTransfer
            do {
                transfer = try await self.writer.sendFile(handle, from: 0, to: size) { progress($0, size) }
            } catch let error as FileReadError {
                // Our own file failed us: tell the server to drop what it has, then report.
                try await self.writer.write(.abort)
                _ = try? await self.nextReply()
                throw FerryClientError.localFile("reading '\(source)' failed: \(error)")
            }
            try await self.writer.write(.end(transfer.end))
            switch try await self.nextReply() {
            case .ok:
                return transfer.sentLength
            case let other:
                throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to END")
            }
        }
    }

    // MARK: - EXIT

    /// Says goodbye; the server answers OK and closes. Failures are ignored: the session is over either way.
    func exitQuietly() async {
        guard self.broken == nil else { return }
        self.broken = "the session has ended"
        guard (try? await self.writer.write(.exit)) != nil else { return }
        _ = try? await self.reader.next()
    }

    // MARK: - Plumbing

    /// The next reply; an ERROR becomes ``FerryClientError/refused(_:)``.
    private func nextReply() async throws -> Message {
        guard let message = try await self.reader.next() else {
            throw TransportError.connectionClosed(midFrame: false)
        }
        if case .error(let reply) = message {
            if reply.code.closesConnection {
                self.broken = reply.description
            }
            throw FerryClientError.refused(reply)
        }
        return message
    }

    /// Runs one operation, translating lower-level failures into ``FerryClientError`` and remembering when the
    /// connection can no longer be used.
    private func guarded<T>(_ operation: () async throws -> T) async throws -> T {
        if let broken = self.broken {
            throw FerryClientError.connectionLost(broken)
        }
        do {
            return try await operation()
        } catch let error as FerryClientError {
            if case .notAFerryServer = error { self.broken = error.description }
            throw error
        } catch let error as FerryProtocolError {
            self.broken = error.description
            throw FerryClientError.protocolViolation(error.description)
        } catch let error as TransportError {
            self.broken = error.description
            throw FerryClientError.connectionLost(error.description)
        } catch ConnectionInterruption.idleTimeout {
            self.broken = "the server stopped responding"
            throw FerryClientError.connectionLost("the server stopped responding")
        } catch {
            self.broken = "\(error)"
            throw FerryClientError.connectionLost(Self.describe(error))
        }
    }

    private static func validateName(_ name: String) throws {
        if case .failure(let rule) = FileName.validate(name) {
            throw FerryClientError.invalidName(name: name, rule: rule)
        }
    }

    static func localItemExists(_ path: FilePath) -> Bool {
        var info = stat()
        return lstat(path.string, &info) == 0
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? FileSystemError {
            return error.message
        }
        return "\(error)"
    }
}

@available(*, unavailable)
extension FerryConnection: Sendable {}
