public import FerryProtocol
import FerryTLS
import FerryTransport
import NIOCore
import NIOPosix
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
    let server: String
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

    /// Greets the server and reads its HELLO.
    ///
    /// - Parameter early: requests sent right after the client's HELLO, in the same write, before the server's HELLO
    ///   arrives (SPEC.md §4 allows frames of at most 64 KiB there): the first answer comes a round trip sooner.
    ///   Only requests that every version spells alike (LIST) and that need no log-in; the caller then reads their
    ///   answers as usual (``list(maximumEntries:alreadyRequested:)``). If the handshake fails the server answers none.
    func handshake(early: [Message] = []) async throws {
        try await self.guarded {
            // A server that is not Ferry may answer and close before our greeting is out: what it said, read
            // next, tells more than the failed write.
            try? await self.writer.writeMagic(then: [.hello(Self.hello)] + early)
            let isFerry: Bool
            do {
                isFerry = try await self.reader.readMagic()
            } catch TransportError.connectionClosed(midFrame: false) {
                // Closed without a byte: a server that stopped, a path that broke, or a stranger that says nothing;
                // only the first two are worth trying again, and nothing says it was a stranger.
                throw FerryClientError.connectionLost(
                    "\(self.server) closed the connection before answering the handshake"
                )
            }
            guard isFerry else { throw FerryClientError.notAFerryServer(server: self.server) }
            switch try await self.reader.next() {
            case .hello(let hello):
                try Handshake.validate(hello)
                self.version = try Handshake.negotiateVersion(local: Self.hello, remote: hello)
                self.reader.maximumPayloadLength = ProtocolLimits.defaultMaximumFramePayload
                self.writer.peerMaximumPayloadLength = Int(clamping: min(hello.maximumFramePayload, UInt64(Int32.max)))
                self.serverMaximumFileSize = hello.maximumFileSize
                self.serverLogin = hello.login
            case .error(let reply) where reply.code == .tlsRequired:
                throw FerryClientError.tlsRequired(server: self.server)
            case .error(let reply):
                throw FerryClientError.refused(reply)
            case nil:
                throw TransportError.connectionClosed(midFrame: true)
            case let other?:
                throw FerryProtocolError.unexpected(other.frameType, in: "instead of the server's HELLO")
            }
        }
    }

    /// The largest upload the server accepts, from its HELLO.
    public private(set) var serverMaximumFileSize: UInt64 = .max

    /// The protocol version both sides use (SPEC.md §10): 2 or later has DELETE, RENAME and AUTH.
    public private(set) var version: UInt16 = 1

    /// What the server's HELLO says of logging in.
    public private(set) var serverLogin: LoginPolicy = .none

    /// The account this connection logged in as, if it did.
    public private(set) var user: String?

    // MARK: - AUTH

    /// Logs in (version 2). A wrong name or password is ``FerryClientError/refused(_:)`` with 111 and leaves the
    /// connection usable.
    public func logIn(_ credentials: Credentials) async throws {
        try await self.guarded {
            guard self.version >= Handshake.deleteAndRenameVersion, self.serverLogin != .none else {
                throw FerryClientError.unsupportedByServer("\(self.server) has no accounts to log in to")
            }
            let limit = ProtocolLimits.maximumCredentialLength
            guard credentials.user.utf8.count <= limit, credentials.password.utf8.count <= limit else {
                // Cut to fit the frame, it would fail as a wrong password; say why instead.
                throw FerryClientError.localFile("a user name or password longer than \(limit) bytes cannot be sent")
            }
            try await self.writer.write(.auth(AuthRequest(user: credentials.user, password: credentials.password)))
            switch try await self.nextReplyOrRequestError() {
            case .success(.ok):
                self.user = credentials.user
            case .success(let other):
                throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to AUTH")
            case .failure(let refusal):
                throw refusal
            }
        }
    }

    // MARK: - DELETE and RENAME

    /// Removes `name` from the library (version 2). A request error (no such file, permission denied) leaves the
    /// connection usable.
    public func delete(_ name: String) async throws {
        try await self.simpleRequest(.delete(DeleteRequest(name: name)), names: [name], operation: "delete")
    }

    /// Gives the file `from` the name `to` (version 2), replacing a file of that name only with `overwrite`.
    public func rename(_ from: String, to: String, overwrite: Bool = false) async throws {
        let request = RenameRequest(from: from, to: to, options: overwrite ? [.overwrite] : [])
        try await self.simpleRequest(.rename(request), names: [from, to], operation: "rename")
    }

    /// Sends a request whose answer is OK or a request error.
    private func simpleRequest(_ request: Message, names: [String], operation: String) async throws {
        for name in names {
            if let refusal = Self.refusal(ofName: name) { throw refusal }
        }
        try await self.guarded {
            guard self.version >= Handshake.deleteAndRenameVersion else {
                throw FerryClientError.unsupportedByServer(
                    "the server speaks protocol version \(self.version), which cannot \(operation) files"
                )
            }
            try await self.writer.write(request)
            switch try await self.nextReplyOrRequestError() {
            case .success(.ok):
                return
            case .success(let other):
                throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to \(request.frameType)")
            case .failure(let refusal):
                throw refusal
            }
        }
    }

    // MARK: - LIST

    /// The most listing entries a client keeps by default: far more than a library holds, far less than the memory a
    /// server streaming entries without end would otherwise take (2.7 GiB in 8 s, before there was a limit).
    public static let defaultMaximumListingEntries = 1_000_000
    /// The most bytes of names a listing may hold, whatever the number of entries.
    public static let maximumListingNameBytes = 256 << 20

    /// The library's files, sorted by name.
    ///
    /// - Parameter maximumEntries: a listing longer than this (or holding more than ``maximumListingNameBytes`` of
    ///   names) is refused with ``FerryClientError/listingTooLarge(limit:)`` and the connection closed, instead of
    ///   growing without bound.
    /// - Parameter alreadyRequested: the LIST went out with the greeting (``FerryClient/withConnection(sendingEarly:_:)``).
    public func list(
        maximumEntries: Int = FerryConnection.defaultMaximumListingEntries,
        alreadyRequested: Bool = false
    ) async throws -> [ListEntry] {
        try await self.guarded {
            if !alreadyRequested {
                try await self.writer.write(.list)
            }
            var entries: [ListEntry] = []
            var nameBytes = 0
            while true {
                switch try await self.nextReply() {
                case .listEntries(let batch):
                    nameBytes += batch.reduce(0) { $0 + $1.name.utf8.count }
                    guard entries.count + batch.count <= maximumEntries, nameBytes <= Self.maximumListingNameBytes
                    else {
                        throw FerryClientError.listingTooLarge(limit: maximumEntries)
                    }
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
        resume: ResumePolicy = .standard,
        progress: (UInt64, UInt64) -> Void = { _, _ in },
        notice: (String) -> Void = { _ in }
    ) async throws -> UInt64 {
        try await Self.single { completed in
            try await self.get(
                [Download(name: name, destination: destination)],
                overwrite: overwrite,
                resume: resume,
                notice: { notice($1) },
                progress: { _, received, expected in progress(received, expected) },
                completed: completed
            )
        }
    }

    /// How many RETRs `get` keeps in flight. On a link with a round trip of `r`, a window of `w` small files moves
    /// at most `w / r` files a second: 32 (the first window) allowed 1,600 a second at 20 ms, where ferryd serves
    /// about 20,000; 1,024 keeps a 50 ms round trip busy. A full window of requests (at most 300 KB, names of 255
    /// bytes) is below the channel's high watermark, so writing it never waits for the server, and the answers are
    /// read as they come: the window costs neither side memory.
    public static let downloadWindow = 1024

    /// How many small uploads `put` sends before their answers have come back: as ``downloadWindow``, 1,024 (it was
    /// 96), and at most ``unansweredUploadLength`` bytes of them.
    public static let uploadWindow = 1024

    /// The most bytes of small uploads `put` keeps written and unanswered: below the client's high watermark
    /// (``ChannelTuning/clientWriteBufferWaterMark``) by more than the largest write, so its writes never wait for
    /// the server to read. A server that stops reading while its own answers wait to be read (a refusal may take a
    /// kilobyte) then still gets them read, and neither side waits for the other.
    static let unansweredUploadLength = 4 << 20

    /// The most bytes of requests `get` writes at once, and the frame bytes a RETR adds to its name.
    static let requestBatchLength = 256 * 1024
    static let requestOverhead = 48

    /// How many small files, and how many of their bytes, a batch reads or writes in one thread-pool job.
    private static let groupLimit = (files: 64, bytes: 4 << 20)

    /// The result of a batch operation run for one file.
    private static func single(
        _ batch: (_ completed: (Int, Result<UInt64, FerryClientError>) -> Void) async throws -> Void
    ) async throws -> UInt64 {
        var outcome: Result<UInt64, FerryClientError>?
        try await batch { _, result in outcome = result }
        guard let outcome else { throw FerryClientError.connectionLost("the transfer did not finish") }
        return try outcome.get()
    }

    /// One file of a batch download.
    public struct Download: Sendable, Hashable {
        public var name: String
        public var destination: String

        public init(name: String, destination: String) {
            self.name = name
            self.destination = destination
        }
    }

    /// Downloads several files over this connection, with up to `window` requests in flight: the server never
    /// waits for a round trip between files (SPEC.md §7 allows RETR to be pipelined).
    ///
    /// Each file is verified and published as ``get(_:to:overwrite:progress:)`` does. A file that fits one DATA
    /// frame is gathered in memory and written, flushed and renamed in one job; a larger one is streamed to disk.
    /// Memory stays bounded either way: a small file's frame, or a large one's chunks of about two socket reads (one
    /// batch being written, the next gathering; ``writeBehindLength``).
    ///
    /// - Parameters:
    ///   - progress: called with (index, bytes received, bytes expected) as data arrives.
    ///   - completed: called once per file, in order, with the bytes stored or why the file was not.
    /// - Throws: only when the connection fails; the files not reported by then were not downloaded.
    public func get(
        _ downloads: [Download],
        overwrite: Bool = false,
        preservingTime: Bool = false,
        window: Int = FerryConnection.downloadWindow,
        resume: ResumePolicy = .standard,
        notice: (Int, String) -> Void = { _, _ in },
        progress: (Int, UInt64, UInt64) -> Void = { _, _, _ in },
        completed: (Int, Result<UInt64, FerryClientError>) -> Void
    ) async throws {
        // Refused locally, before anything is sent: bad names, and targets in the way.
        var refusals: [Int: FerryClientError] = [:]
        for (index, download) in downloads.enumerated() {
            if let refusal = Self.refusal(ofName: download.name) {
                refusals[index] = refusal
            } else if !overwrite, Self.localItemExists(FilePath(download.destination)) {
                refusals[index] = .localFile(
                    "'\(download.destination)' already exists locally; not replaced (use --force to replace it)"
                )
            }
        }
        let requested = downloads.indices.filter { refusals[$0] == nil }
        let resumes = try await self.keptPartials(of: downloads, at: requested, policy: resume, notice: notice)
        let window = max(1, window)
        // Small files received and verified, published together (one job) before this side would wait for the
        // server, or once a group is full; reported in order as they are published.
        var unpublished: [(index: Int, file: VerifiedDownload)] = []
        var unpublishedBytes = 0
        func publishGroup() async {
            guard !unpublished.isEmpty else { return }
            let outcomes = await LocalDownload.publish(unpublished.map(\.file), overwrite: overwrite)
            for (entry, failure) in zip(unpublished, outcomes) {
                completed(entry.index, failure.map { .failure($0) } ?? .success(UInt64(entry.file.bytes.readableBytes)))
            }
            unpublished.removeAll()
            unpublishedBytes = 0
        }
        do {
            try await self.guarded {
                var sent = 0
                var answered = 0
                for index in downloads.indices {
                    if let refusal = refusals[index] {
                        await publishGroup()
                        completed(index, .failure(refusal))
                        continue
                    }
                    // Top the window up in one write when half of it has been answered, with at most
                    // ``requestBatchLength`` bytes of requests: the write never waits for the server to read (NIO
                    // queues up to 512 KiB), so this side goes on to read the answers.
                    if sent - answered <= window / 2, sent < requested.count {
                        var end = sent
                        var length = 0
                        while end < min(requested.count, answered + window) {
                            length += Self.requestOverhead + downloads[requested[end]].name.utf8.count
                            guard end == sent || length <= Self.requestBatchLength else { break }
                            end += 1
                        }
                        let batch = requested[sent..<end]
                        try await self.writer.write(
                            batch.map { index in
                                let kept = resumes[index]
                                return .retrieve(
                                    RetrieveRequest(
                                        name: downloads[index].name,
                                        offset: kept?.kept ?? 0,
                                        ifUnchanged: kept?.version
                                    )
                                )
                            }
                        )
                        sent += batch.count
                    }
                    if !self.reader.hasBufferedFrame() {
                        await publishGroup()
                    }
                    let target = FilePath(downloads[index].destination)
                    let outcome = try await self.receiveFile(
                        downloads[index].name,
                        to: target,
                        overwrite: overwrite,
                        preservingTime: preservingTime,
                        resuming: resumes[index],
                        notice: { notice(index, $0) },
                        progress: { progress(index, $0, $1) }
                    )
                    answered += 1
                    switch outcome {
                    case .verified(let bytes, let modified):
                        unpublished.append((index, VerifiedDownload(bytes: bytes, target: target, modified: modified)))
                        unpublishedBytes += bytes.readableBytes
                        if unpublished.count >= Self.groupLimit.files || unpublishedBytes >= Self.groupLimit.bytes {
                            await publishGroup()
                        }
                    case .finished(let result):
                        await publishGroup()
                        completed(index, result)
                    }
                }
                await publishGroup()
            }
        } catch {
            // Files already verified are kept even if the connection then fails.
            await publishGroup()
            throw error
        }
    }

    /// The most verified DATA a download gathers before it hands it to a write. A write usually comes sooner: once
    /// the chunks of one socket read have been checked and no whole frame is left
    /// (``FerryTransport/MessageReader/hasBufferedFrame()``), what waits is written, so a write carries one read's
    /// worth (up to 2 MiB) and a stalled transfer holds back nothing it verified. One write is in flight at a time,
    /// so a download holds about two reads' worth of chunks, besides its reads. `ferry get` of 1 GiB on tmpfs, with
    /// ``FerryTransport/EventLoopTaskExecutor`` (medians of 5–8 interleaved rounds): one chunk per write, each
    /// waited for before the next, 0.56 s; up to four such writes at once, 0.51 s, as they spin on the file's lock;
    /// gathering up to 4 MiB before each write, 0.49 s; and one write per read as now, the same within the noise
    /// (0.522 against 0.526 s).
    static let writeBehindLength = 4 << 20

    /// The END of the last download, for version 3's whole-file CRC.
    private var lastEnd: EndOfData?

    /// The kept partial downloads (``KeptPartial``) that `downloads` at `indices` may resume, checked in one
    /// thread-pool job before any RETR is sent. Without version 3, or with resuming off, none: what was kept is
    /// removed, and those downloads start from the beginning.
    private func keptPartials(
        of downloads: [Download],
        at indices: [Int],
        policy: ResumePolicy,
        notice: (Int, String) -> Void
    ) async throws -> [Int: KeptPartial] {
        let server = self.server
        let resumable = policy.enabled && self.version >= Handshake.resumeVersion
        let found = try await NIOThreadPool.singleton.runIfActive { () -> [(Int, KeptPartial.Lookup)] in
            indices.map { index in
                let target = downloads[index].destination
                guard resumable else {
                    KeptPartial.remove(for: target)
                    return (index, .none)
                }
                return (
                    index,
                    KeptPartial.find(
                        for: target,
                        server: server,
                        name: downloads[index].name,
                        maximumAge: policy.maximumAge
                    )
                )
            }
        }
        var kept: [Int: KeptPartial] = [:]
        for (index, lookup) in found {
            switch lookup {
            case .none:
                break
            case .resumable(let partial):
                kept[index] = partial
                notice(
                    index,
                    localized(
                        "resuming '%@' after %@ of %@ bytes",
                        downloads[index].name,
                        "\(partial.kept)",
                        "\(partial.version.size)"
                    )
                )
            case .discarded(let reason):
                notice(index, localized("starting '%@' again from the beginning: %@", downloads[index].name, reason))
            }
        }
        return kept
    }

    /// How one RETR ended: a small file received whole and verified, still to be published, or a result.
    private enum ReceivedFile {
        /// With the time to give the file, if it keeps the server's.
        case verified(ByteBuffer, modified: Int64?)
        case finished(Result<UInt64, FerryClientError>)
    }

    /// Reads the answer to one RETR. Request errors and local failures are the file's result; a broken connection
    /// throws.
    private func receiveFile(
        _ name: String,
        to target: FilePath,
        overwrite: Bool,
        preservingTime: Bool,
        resuming kept: KeptPartial?,
        notice: (String) -> Void,
        progress: (UInt64, UInt64) -> Void
    ) async throws -> ReceivedFile {
        let info: FerryProtocol.FileInfo
        switch try await self.nextReplyOrRequestError() {
        case .failure(let refusal):
            return .finished(.failure(refusal))
        case .success(.fileInfo(let announced)) where announced.offset == (kept?.kept ?? 0):
            info = announced
        case .success(.fileInfo(let announced)) where kept != nil && announced.offset == 0:
            // RETR's condition failed: the server's file is not the one the kept part came from.
            notice(
                localized(
                    "'%@' changed on the server since the download was cut; downloading it again from the start",
                    name
                )
            )
            info = announced
        case .success(.fileInfo(let announced)):
            // Only the tail would arrive, and be "verified" as if it were the file.
            throw FerryProtocolError.malformed(
                .fileInfo,
                "FILE_INFO starts at \(announced.offset); \(kept?.kept ?? 0) was asked for"
            )
        case .success(let other):
            throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to RETR")
        }
        let resumed = info.offset > 0 ? kept : nil
        var transfer = IncomingTransfer(expectedLength: info.size - info.offset)
        let start = info.offset
        return try await withoutActuallyEscaping(progress) { progress in
            try await self.receiveFile(
                name,
                info,
                to: target,
                overwrite: overwrite,
                modified: preservingTime ? info.modified : nil,
                resumed: resumed,
                kept: kept,
                transfer: &transfer,
                progress: { received, _ in progress(start + received, info.size) }
            )
        }
    }

    /// ``receiveFile(_:to:overwrite:preservingTime:resuming:notice:progress:)`` once FILE_INFO has come.
    private func receiveFile(
        _ name: String,
        _ info: FerryProtocol.FileInfo,
        to target: FilePath,
        overwrite: Bool,
        modified: Int64?,
        resumed: KeptPartial?,
        kept: KeptPartial?,
        transfer: inout IncomingTransfer,
        progress: (UInt64, UInt64) -> Void
    ) async throws -> ReceivedFile {
        progress(0, info.size)
        if resumed == nil, info.size <= UInt64(ProtocolLimits.defaultDataChunkLength) {
            var bytes = ByteBuffer()
            let outcome = try await self.receiveData(&transfer, progress: progress) { chunk in
                chunk.forEachPiece { bytes.writeImmutableBuffer($0) }
            }
            guard case .success = outcome else { return .finished(outcome) }
            if kept != nil {
                try? await NIOThreadPool.singleton.runIfActive { KeptPartial.remove(for: target.string) }
            }
            return .verified(bytes, modified: modified)
        }
        let download: LocalDownload
        do {
            let record = KeptPartial(
                server: self.server,
                name: name,
                version: FileVersion(size: info.size, modified: info.modified),
                kept: resumed?.kept ?? 0,
                crc32: resumed?.crc32 ?? 0
            )
            download = try await LocalDownload.openKept(for: target, record: record, resuming: resumed != nil)
        } catch let error as FerryClientError {
            _ = try await self.receiveData(&transfer, progress: { _, _ in }, into: { _ in })
            return .finished(.failure(error))
        }
        var failure: FerryClientError?
        let outcome: Result<UInt64, FerryClientError>
        do {
            // Verified chunks are written behind the transfer by a child task, while the next ones arrive and are
            // checked: one write at a time (two on one file only contend for its lock), of the chunks gathered
            // meanwhile (``writeBehindLength``).
            outcome = try await withThrowingTaskGroup(of: Void.self) { writes in
                var waiting: [DataChunk] = []
                var waitingLength = 0
                func finishWrite() async {
                    do {
                        try await writes.waitForAll()
                    } catch {
                        await writes.drain()
                        failure = failure ?? (error as? FerryClientError) ?? .localFile("\(error)")
                    }
                }
                func startWrite() async {
                    await finishWrite()
                    // After a local failure the rest of the file is read and dropped: the connection stays usable.
                    if failure == nil, !waiting.isEmpty {
                        writes.addTask(operation: download.nextWrite(waiting))
                    }
                    waiting.removeAll(keepingCapacity: true)
                    waitingLength = 0
                }
                do {
                    let outcome = try await self.receiveData(&transfer, progress: progress) { chunk in
                        guard failure == nil else { return }
                        waiting.append(chunk)
                        waitingLength += chunk.length
                        // Written before the transfer waits for more bytes, too: a stalled transfer holds back
                        // nothing a resume would need (what `ferry get` keeps when it is interrupted).
                        if waitingLength >= Self.writeBehindLength || !self.reader.hasBufferedFrame() {
                            await startWrite()
                        }
                    }
                    await startWrite()
                    await finishWrite()
                    return outcome
                } catch {
                    // What arrived verified is written, to be kept for a resume.
                    await startWrite()
                    await finishWrite()
                    throw error
                }
            }
        } catch {
            // Cut off: what arrived whole and verified, frame by frame, is kept for the next attempt to resume.
            await download.keep()
            throw error
        }
        guard case .success = outcome, failure == nil else {
            await download.discard()
            return .finished(failure.map { .failure($0) } ?? outcome)
        }
        if let resumed {
            // The proof: the kept part's CRC, combined with the rest's, must be the server's whole file's.
            guard let whole = self.lastEnd?.fileCRC32, let end = self.lastEnd,
                CRC32.combine(resumed.crc32, end.crc32, secondLength: end.length) == whole
            else {
                await download.discard()
                return .finished(.failure(.keptPartMismatch(name: name)))
            }
        }
        do {
            try await download.commit(to: target, overwrite: overwrite, modified: modified)
        } catch let error as FerryClientError {
            await download.discard()
            return .finished(.failure(error))
        }
        // The file's size, the kept part included: what was stored, not what this attempt moved.
        return .finished(outcome.map { $0 + (resumed?.kept ?? 0) })
    }

    /// Reads DATA up to END and verifies the whole. A request error midway (the server could not read its file)
    /// is the file's result.
    private func receiveData(
        _ transfer: inout IncomingTransfer,
        progress: (UInt64, UInt64) -> Void,
        into sink: (DataChunk) async throws -> Void
    ) async throws -> Result<UInt64, FerryClientError> {
        self.lastEnd = nil
        while true {
            switch try await self.nextReplyOrRequestError() {
            case .failure(let refusal):
                return .failure(refusal)
            case .success(.data(let chunk)):
                do {
                    try transfer.receive(chunk)
                } catch {
                    // The server sends more than it announced: it cannot be trusted with the rest either.
                    throw FerryProtocolError(.malformedPayload, "\(error)")
                }
                try await sink(chunk)
                progress(transfer.receivedLength, transfer.expectedLength)
            case .success(.end(let end)):
                self.lastEnd = end
                do {
                    try transfer.verify(end)
                } catch {
                    return .failure(.verificationFailed(error.description))
                }
                return .success(transfer.receivedLength)
            case .success(let other):
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
        resume: ResumePolicy = .standard,
        progress: (UInt64, UInt64) -> Void = { _, _ in },
        notice: (String) -> Void = { _ in }
    ) async throws -> UInt64 {
        try await Self.single { completed in
            try await self.put(
                [Upload(source: source, name: name)],
                overwrite: overwrite,
                resume: resume,
                notice: { notice($1) },
                progress: { _, sent, size in progress(sent, size) },
                completed: completed
            )
        }
    }

    /// One file of a batch upload.
    public struct Upload: Sendable, Hashable {
        public var source: String
        public var name: String

        public init(source: String, name: String) {
            self.source = source
            self.name = name
        }
    }

    /// Uploads several files over this connection.
    ///
    /// A file that fits one DATA frame is read in one job and sent with its STOR and END in one write, without
    /// waiting for READY, with up to `window` such uploads awaiting their answers (SPEC.md §7.3: the server drops
    /// the data of a STOR it refuses). A larger file waits for READY and is streamed, so a refusal never costs
    /// its transfer.
    ///
    /// - Parameters:
    ///   - progress: called with (index, bytes sent, size) as data goes out.
    ///   - completed: called once per file, in order, with the bytes stored or why the file was not.
    /// - Throws: only when the connection fails; the files not reported by then were not stored.
    ///   - resume: whether a large upload the server kept when it was cut (version 4) is resumed, and where its token
    ///     is recorded (``KeptUpload``).
    ///   - notice: called with (index, sentence) when an upload resumes, or starts again though something was kept.
    public func put(
        _ uploads: [Upload],
        overwrite: Bool = false,
        window: Int = FerryConnection.uploadWindow,
        resume: ResumePolicy = .standard,
        notice: (Int, String) -> Void = { _, _ in },
        progress: (Int, UInt64, UInt64) -> Void = { _, _, _ in },
        completed: (Int, Result<UInt64, FerryClientError>) -> Void
    ) async throws {
        let options: StoreOptions = overwrite ? [.overwrite] : []
        let window = max(1, window)
        try await self.guarded {
            // A file sent whole goes in one DATA frame, so it must fit the server's limit (SPEC.md §4), which
            // may be as low as 64 KiB.
            let chunk = min(ProtocolLimits.defaultDataChunkLength, self.writer.peerMaximumPayloadLength)
            var readAhead: (start: Int, files: [LocalSource.Peek]) = (0, [])
            // Small uploads sent and not yet answered, oldest first, with the bytes of their frames.
            var awaiting: [(index: Int, size: UInt64, frames: Int)] = []
            var first = 0
            var unansweredBytes = 0
            // Their frames, written together once they reach a DATA frame's size or when an answer awaited is
            // still among them. A full window is not a reason to write: the server holds the files already
            // written, and writing each further file alone would cost both sides a system call per file.
            var outgoing = ByteBuffer()
            // `awaiting[..<written]` have left in a write.
            var written = 0
            func send() async throws {
                guard outgoing.readableBytes > 0 else { return }
                try await self.writer.writeRaw(outgoing)
                outgoing.clear()
                written = awaiting.count
            }
            // Answers are read down to `limit` uploads and ``unansweredUploadLength`` bytes: what was written and not
            // answered stays below the channel's high watermark (``ChannelTuning/clientWriteBufferWaterMark``), so a
            // write never waits for the server while this side is not reading its answers, however long they are.
            func collect(downTo limit: Int) async throws {
                while awaiting.count - first > limit
                    || (awaiting.count > first && unansweredBytes > Self.unansweredUploadLength)
                {
                    if first >= written {
                        try await send()
                    }
                    let (index, size, frames) = awaiting[first]
                    first += 1
                    unansweredBytes -= frames
                    completed(index, try await self.storeAnswer(size: size))
                }
            }
            for (index, upload) in uploads.enumerated() {
                if let refusal = Self.refusal(ofName: upload.name) {
                    try await collect(downTo: 0)
                    completed(index, .failure(refusal))
                    continue
                }
                if index >= readAhead.start + readAhead.files.count {
                    // The next files, read in one job.
                    let paths = uploads[index..<min(uploads.count, index + Self.groupLimit.files)].map(\.source)
                    readAhead = (index, await LocalSource.read(paths, wholeUpTo: chunk, budget: Self.groupLimit.bytes))
                }
                let source: LocalSource
                do {
                    source = try await readAhead.files[index - readAhead.start].opened()
                } catch let error as FerryClientError {
                    try await collect(downTo: 0)
                    completed(index, .failure(error))
                    continue
                }
                switch source {
                case .whole(let bytes):
                    let size = UInt64(bytes.readableBytes)
                    var transfer = OutgoingTransfer()
                    let store = StoreRequest(name: upload.name, size: size, options: options)
                    let before = outgoing.readableBytes
                    FrameSerializer.serialize(.store(store), into: &outgoing)
                    if size > 0 {
                        let chunk = DataChunk(bytes)
                        transfer.record(chunk)
                        FrameSerializer.serialize(.data(chunk), into: &outgoing)
                    }
                    FrameSerializer.serialize(.end(transfer.end), into: &outgoing)
                    progress(index, 0, size)
                    let frames = outgoing.readableBytes - before
                    awaiting.append((index, size, frames))
                    unansweredBytes += frames
                    if outgoing.readableBytes >= ProtocolLimits.defaultDataChunkLength {
                        try await send()
                    }
                    progress(index, size, size)
                    try await collect(downTo: window)
                case .stream(let handle, let opened):
                    let size = UInt64(max(opened.size, 0))
                    let outcome: Result<UInt64, FerryClientError>
                    do {
                        // The answers still awaited come first; the connection may fail while they do, and the
                        // handle must be closed then too (NIO traps on a handle dropped open).
                        try await collect(downTo: 0)
                        outcome = try await self.upload(
                            handle,
                            opened: opened,
                            as: upload.name,
                            options: options,
                            source: upload.source,
                            resume: resume,
                            notice: { notice(index, $0) },
                            progress: { progress(index, $0, size) }
                        )
                    } catch {
                        try? await handle.closeRegardlessOfCancellation()
                        throw error
                    }
                    try? await handle.closeRegardlessOfCancellation()
                    completed(index, outcome)
                }
            }
            try await collect(downTo: 0)
        }
    }

    /// Version 1 has no resumed uploads (SPEC.md §5.4): a READY at any other offset than 0 is malformed, and no DATA
    /// follows it.
    private static func checkStartsAtZero(_ ready: Ready) throws {
        guard ready.offset == 0 else {
            throw FerryProtocolError.malformed(.ready, "offset \(ready.offset); version 1 allows only 0")
        }
    }

    /// Reads the answer to an upload sent without waiting: READY then OK, or an ERROR in place of either.
    private func storeAnswer(size: UInt64) async throws -> Result<UInt64, FerryClientError> {
        switch try await self.nextReplyOrRequestError() {
        case .failure(let refusal):
            return .failure(refusal)
        case .success(.ready(let ready)):
            try Self.checkStartsAtZero(ready)
        case .success(let other):
            throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to STOR")
        }
        switch try await self.nextReplyOrRequestError() {
        case .failure(let refusal):
            return .failure(refusal)
        case .success(.ok):
            return .success(size)
        case .success(let other):
            throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to END")
        }
    }

    /// Streams a large file: STOR, wait for READY, DATA as it is read, END, then the answer.
    ///
    /// In version 4 the server keeps a large upload that is cut, and READY names it with a token, recorded here
    /// (``KeptUpload``) until the upload is answered. A later upload of the same name resumes with that token if the
    /// source is unchanged: the server's READY says how many bytes it kept, only the rest is sent, and END carries the
    /// CRC-32 of the whole file, read again from the source, which the server checks against what it kept and
    /// received before it commits anything.
    private func upload(
        _ handle: ReadFileHandle,
        opened: _NIOFileSystem.FileInfo,
        as name: String,
        options: StoreOptions,
        source: String,
        resume: ResumePolicy,
        notice: (String) -> Void,
        progress: (UInt64) -> Void
    ) async throws -> Result<UInt64, FerryClientError> {
        let size = UInt64(max(opened.size, 0))
        let identity = opened.platformSpecificStatus.map(KeptUpload.SourceIdentity.init)
        let records = self.version >= Handshake.resumableUploadVersion ? resume.keptUploadsFolder : nil
        let (server, user) = (self.server, self.user)
        let kept: KeptUpload? =
            if let records {
                try await NIOThreadPool.singleton.runIfActive {
                    KeptUpload.find(in: records, server: server, user: user, name: name)
                }
            } else {
                nil
            }
        // What the server kept is resumed only for the same, unchanged source; otherwise its token empties it.
        var request = StoreRequest(name: name, size: size, options: options, resumeToken: kept?.token)
        if let kept {
            if !resume.enabled {
                notice(localized("starting '%@' again from the beginning (--no-resume)", name))
            } else if kept.source != identity {
                notice(
                    localized(
                        "starting '%@' again from the beginning: '%@' changed since the upload was cut",
                        name,
                        source
                    )
                )
            } else {
                request.offset = size
            }
        }
        func forget() async {
            guard let records else { return }
            _ = try? await NIOThreadPool.singleton.runIfActive {
                KeptUpload.remove(in: records, server: server, user: user, name: name)
            }
        }
        try await self.writer.write(.store(request))
        let ready: Ready
        switch try await self.nextReplyOrRequestError() {
        case .failure(let refusal):
            // The server keeps nothing for a refused STOR, except an upload being received elsewhere.
            if refusal.errorCode != .uploadInProgress { await forget() }
            return .failure(refusal)
        case .success(.ready(let answer)):
            ready = answer
        case .success(let other):
            throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to STOR")
        }
        // SPEC.md §5.4: an offset only to a STOR with a token, and never past what it allowed.
        guard ready.offset == 0 || (request.resumeToken != nil && ready.offset <= request.offset) else {
            throw FerryProtocolError.malformed(
                .ready,
                "offset \(ready.offset) for a STOR that allowed \(request.offset)"
            )
        }
        if let records, let token = ready.token, let identity, token != kept?.token || kept?.source != identity {
            let record = KeptUpload(server: server, user: user, name: name, token: token, source: identity)
            _ = try await NIOThreadPool.singleton.runIfActive { record.write(in: records) }
        } else if ready.token == nil, kept != nil {
            await forget()
        }
        let start = ready.offset
        var keptCRC: UInt32 = 0
        if start > 0 {
            notice(localized("resuming '%@' after %@ of %@ bytes, kept by the server", name, "\(start)", "\(size)"))
            guard
                let crc = try? await handle.withUnsafeDescriptor({
                    BlockingFileIO.checksum($0.rawValue, length: start)
                })
            else {
                try await self.writer.write(.abort)
                _ = try await self.nextReplyOrRequestError()
                return .failure(.localFile("reading '\(source)' failed"))
            }
            keptCRC = crc
        }
        progress(start)
        let transfer: OutgoingTransfer
        do {
            transfer = try await self.writer.sendFile(handle, from: start, to: size, progress: { progress(start + $0) })
        } catch let error as FileReadError {
            // Our own file failed us: tell the server to drop what it has (it answers ABORTED), then report.
            try await self.writer.write(.abort)
            _ = try await self.nextReplyOrRequestError()
            await forget()
            return .failure(.localFile("reading '\(source)' failed: \(error)"))
        }
        guard transfer.sentLength == size - start else {
            // The file shrank while being read: the server will refuse the END's length, and says so.
            try await self.writer.write(.end(transfer.end))
            _ = try await self.nextReplyOrRequestError()
            await forget()
            return .failure(.localFile("'\(source)' changed while being sent"))
        }
        if await Self.changed(handle, since: opened) {
            // Written to while it was read (grown, or rewritten in place): what was sent may be a mix of old and
            // new bytes, which the server would verify and keep. It drops them instead (ABORT, answered ABORTED).
            try await self.writer.write(.abort)
            _ = try await self.nextReplyOrRequestError()
            await forget()
            return .failure(.localFile("'\(source)' changed while being sent; it was not stored"))
        }
        var end = transfer.end
        if self.version >= Handshake.resumableUploadVersion {
            end.fileCRC32 = CRC32.combine(keptCRC, end.crc32, secondLength: end.length)
        }
        try await self.writer.write(.end(end))
        switch try await self.nextReplyOrRequestError() {
        case .failure(let refusal):
            await forget()
            if start > 0, refusal.errorCode == .checksumMismatch {
                return .failure(.keptUploadMismatch(name: name))
            }
            return .failure(refusal)
        case .success(.ok):
            await forget()
            return .success(size)
        case .success(let other):
            throw FerryProtocolError.unexpected(other.frameType, in: "as the answer to END")
        }
    }

    /// Whether the open file's size, modification or status-change time differs from what it was when opened (or
    /// it can no longer be inspected).
    private static func changed(_ handle: ReadFileHandle, since opened: _NIOFileSystem.FileInfo) async -> Bool {
        guard let now = try? await handle.info() else { return true }
        return now.size != opened.size || now.lastDataModificationTime != opened.lastDataModificationTime
            || now.lastStatusChangeTime != opened.lastStatusChangeTime
    }

    // MARK: - EXIT

    /// Says goodbye, without waiting for the server's OK: a client may close between requests (SPEC.md §7.4), so the
    /// round trip to the OK would only delay the end of every command (one round trip of four for `ferry list`).
    /// After a failure, answers still on their way are dropped with the connection. EXIT still goes out first, so
    /// that the server logs a session that ended as it should. Failures are ignored: the session is over either way.
    func exitQuietly() async {
        guard self.broken == nil else { return }
        self.broken = "the session has ended"
        _ = try? await self.writer.write(.exit)
    }

    // MARK: - Plumbing

    /// The next reply; an ERROR becomes ``FerryClientError/refused(_:)``.
    private func nextReply() async throws -> Message {
        try await self.nextReplyOrRequestError().get()
    }

    /// The next reply, or the request error (1xx) that took its place: the connection goes on after those. A
    /// connection error (2xx) throws: the server closes after it.
    private func nextReplyOrRequestError() async throws -> Result<Message, FerryClientError> {
        guard let message = try await self.reader.next() else {
            throw TransportError.connectionClosed(midFrame: false)
        }
        guard case .error(let reply) = message else {
            return .success(message)
        }
        if reply.code.closesConnection {
            self.broken = reply.description
            throw FerryClientError.refused(reply)
        }
        return .failure(.refused(reply))
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
            switch error {
            case .notAFerryServer, .listingTooLarge:
                // The rest of that listing is still on its way: nothing more can be read on this connection.
                self.broken = error.description
            default:
                break
            }
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

    /// The error for a name no Ferry server accepts, refused before it is sent; `nil` for a valid name.
    private static func refusal(ofName name: String) -> FerryClientError? {
        if case .failure(let rule) = FileName.validate(name) {
            return .invalidName(name: name, rule: rule)
        }
        return nil
    }

    static func localItemExists(_ path: FilePath) -> Bool {
        var info = stat()
        return lstat(path.string, &info) == 0
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? FileSystemError {
            return error.message
        }
        if let error = error as? ChannelError, error == .ioOnClosedChannel || error == .eof {
            return "the connection was closed"
        }
        return TLSFailure.describe(error) ?? "\(error)"
    }
}

@available(*, unavailable)
extension FerryConnection: Sendable {}
