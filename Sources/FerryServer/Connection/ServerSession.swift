import FerryProtocol
import FerryTLS
import FerryTransport
import Logging
import NIOCore
import NIOPosix
import _NIOFileSystem

/// One client's session, from the magic to the close (SPEC.md §4 and §7).
///
/// Requests are handled one after another by this task alone, so its state is the position in this code: waiting
/// for a request, streaming a file out, or receiving one into staging. Request errors are answered and the loop
/// goes on; anything that breaks the protocol is answered with a connection error and ends the session.
struct ServerSession {
    private var reader: MessageReader
    private var writer: MessageWriter
    private let library: FileLibrary
    private let configuration: ServerConfiguration
    private let quiescer: ConnectionQuiescer
    private let transfers: TransferBudget
    private let channel: any Channel
    private var logger: Logger
    /// Whether our magic has gone out: errors after the peer's magic are frames, and frames follow our magic.
    private var sentMagic = false
    /// The largest file the client takes (its HELLO's `max_file_size`).
    private var peerMaximumFileSize = UInt64.max
    /// The protocol version both sides use (SPEC.md §10).
    private var version: UInt16 = 1
    /// What this client may do (``ServerConfiguration/anonymousPermission`` until it logs in); `nil` for nothing.
    private var permission: Permission?
    /// The account this client logged in as; `nil` while anonymous.
    private var user: String?
    /// Failed AUTHs on this connection.
    private var loginFailures = 0
    private let logins: LoginThrottle
    /// Small replies held back while more requests are already queued, written together before the session
    /// next waits for input (or once they reach ``unsentLimit``): a burst of pipelined requests costs one write.
    private var unsent = ByteBuffer()
    private static let unsentLimit = 256 * 1024
    /// Small uploads received whole and verified while more requests were already queued: committed together
    /// (``FileLibrary/commit(_:)``) before the session answers anything else or waits for input, and answered then.
    private var uncommitted: [VerifiedUpload] = []
    private var uncommittedBytes = 0
    private static let groupCommitLimit = (uploads: 64, bytes: 1 << 20)
    /// Set when a STOR was refused before READY: the DATA and the END or ABORT a pipelining client sent with it
    /// are dropped, up to the next request (SPEC.md §7.3).
    private var skippingRefusedUpload = false
    /// Requests taken from the reader before their turn (a run of pipelined RETRs and the request after it), or
    /// the error reading one raised: handled in order before anything else is read. Empty whenever an upload's
    /// frames are being read, since only a RETR fills it and the run ends at any other request.
    private var requestsTakenEarly: [Result<Message, any Error>] = []
    /// Small files read for the RETRs in ``requestsTakenEarly`` (and the one being handled), in order: a run of
    /// pipelined downloads costs one thread-pool job per group instead of one per file.
    private var readAhead: [(name: String, read: Result<WholeFile?, LibraryError>)] = []
    /// 64 files of a client's download window (the reference client keeps up to 1,024 RETRs in flight), within one
    /// small file's worth of memory (at most 256 KiB plus the last file read) per session, however many sessions
    /// there are.
    private static let readAheadLimit = (requests: 64, bytes: ProtocolLimits.defaultDataChunkLength)

    init(
        inbound: NIOAsyncChannelInboundStream<ByteBuffer>,
        outbound: NIOAsyncChannelOutboundWriter<IOData>,
        channel: any Channel,
        inputWait: InputWait?,
        library: FileLibrary,
        configuration: ServerConfiguration,
        quiescer: ConnectionQuiescer,
        transfers: TransferBudget,
        frameBudget: FrameBudget,
        logins: LoginThrottle,
        logger: Logger
    ) {
        self.logins = logins
        self.reader = MessageReader(
            inbound,
            inputWait: inputWait,
            frameBudget: frameBudget,
            frameBudgetPatience: configuration.idleTimeout
        )
        self.writer = MessageWriter(outbound, allocator: channel.allocator)
        self.channel = channel
        self.library = library
        self.configuration = configuration
        self.quiescer = quiescer
        self.transfers = transfers
        self.logger = logger
    }

    /// Runs the session to its end and returns why it ended, for the connection log line.
    mutating func run() async -> String {
        do {
            guard try await self.handshake() else {
                return "not a Ferry client"
            }
            while true {
                let message: Message?
                do {
                    message = try await self.nextMessage()
                } catch let error as FerryProtocolError where error.kind == .invalidName {
                    if let type = error.frameType, [.delete, .rename].contains(type),
                        self.version < Handshake.deleteAndRenameVersion
                    {
                        // Version 1 has no such request, whatever its payload (SPEC.md §7.6).
                        throw FerryProtocolError.unexpected(type, in: "in a version 1 session")
                    }
                    // The frame was intact; only the name is unacceptable.
                    self.log(
                        RequestRecord(operation: error.frameType.map { "\($0)" } ?? "request", name: nil),
                        bytes: 0,
                        result: error.detail,
                        outcome: .refused(.invalidName)
                    )
                    self.skippingRefusedUpload = error.frameType == .store
                    try await self.reply(.error(ErrorReply(code: .invalidName, message: error.detail)))
                    continue
                }
                guard let message else {
                    return "closed by the client"
                }
                if self.skippingRefusedUpload {
                    switch message {
                    case .data:
                        continue
                    case .end, .abort:
                        self.skippingRefusedUpload = false
                        continue
                    default:
                        self.skippingRefusedUpload = false
                    }
                }
                self.quiescer.beginRequest()
                let carryOn = try await self.handle(message)
                let stopping = self.quiescer.endRequest()
                guard carryOn else { return "EXIT" }
                if stopping { throw ConnectionInterruption.shuttingDown }
            }
        } catch {
            return await self.fail(with: error)
        }
    }

    // MARK: - Handshake

    /// `false` if the peer is not speaking Ferry (it has been told so).
    private mutating func handshake() async throws -> Bool {
        guard try await self.reader.readMagic() else {
            try await self.writer.writeRaw(ByteBuffer(string: Handshake.notFerryReply))
            self.writer.finish()
            await self.linger()
            return false
        }
        let first: Message?
        do {
            first = try await self.reader.next()
        } catch let error as FerryProtocolError where error.kind == .invalidName {
            // A request in place of HELLO, with a name that breaks the rules: a bad handshake all the same.
            throw FerryProtocolError(
                .badHandshake,
                "the first frame after the magic must be HELLO, not \(error.frameType.map { "\($0)" } ?? "a request")"
            )
        }
        guard case .hello(let hello)? = first else {
            throw FerryProtocolError(.badHandshake, "the first frame after the magic must be HELLO")
        }
        try Handshake.validate(hello)
        self.version = try Handshake.negotiateVersion(local: self.configuration.hello, remote: hello)
        self.permission = self.configuration.anonymousPermission
        self.reader.maximumPayloadLength = self.configuration.maximumFramePayload
        self.writer.peerMaximumPayloadLength = Int(clamping: min(hello.maximumFramePayload, UInt64(Int32.max)))
        self.peerMaximumFileSize = hello.maximumFileSize
        // The client's part is done: the deadline stops before our HELLO goes out, not after.
        self.channel.triggerUserOutboundEvent(HandshakeCompleted(), promise: nil)
        self.sentMagic = true
        try await self.writer.writeMagic(then: .hello(self.configuration.hello))
        return true
    }

    // MARK: - Requests

    /// Handles one request; `false` when the session is over (EXIT).
    private mutating func handle(_ message: Message) async throws -> Bool {
        if message.frameType != .store {
            // Whatever comes next may read what the queued uploads wrote.
            try await self.commitGroup()
        }
        switch message {
        case .list:
            let record = RequestRecord(operation: "LIST", name: nil)
            guard try await self.permits(.read, record) else { return true }
            try await self.list(record)
        case .retrieve(let request):
            let record = RequestRecord(operation: "RETR", name: request.name)
            guard try await self.permits(.read, record) else { return true }
            try await self.retrieve(request, record)
        case .store(let request):
            let record = RequestRecord(operation: "STOR", name: request.name)
            guard try await self.permits(request.options.contains(.overwrite) ? .full : .upload, record) else {
                // The client may have sent the data without waiting for READY (SPEC.md §7.3): drop it.
                self.skippingRefusedUpload = true
                return true
            }
            try await self.store(request, record)
        case .delete(let request) where self.version >= Handshake.deleteAndRenameVersion:
            let record = RequestRecord(operation: "DELETE", name: request.name)
            guard try await self.permits(.full, record) else { return true }
            try await self.perform(record) { try await $0.delete(request.name) }
        case .auth(let request) where self.version >= Handshake.deleteAndRenameVersion && self.user == nil:
            try await self.logIn(request)
        case .rename(let request) where self.version >= Handshake.deleteAndRenameVersion:
            let record = RequestRecord(operation: "RENAME", name: request.from, newName: request.to)
            guard try await self.permits(.full, record) else { return true }
            guard RenameOptions.known.isSuperset(of: request.options) else {
                try await self.refuse(
                    .unsupported,
                    "unknown RENAME options 0x\(String(request.options.rawValue, radix: 16))",
                    record
                )
                return true
            }
            let overwrite = request.options.contains(.overwrite)
            try await self.perform(record) { try await $0.rename(request.from, to: request.to, overwrite: overwrite) }
        case .exit:
            try await self.reply(.ok)
            try await self.flush()
            self.log(RequestRecord(operation: "EXIT", name: nil), bytes: 0, result: "ok")
            return false
        default:
            throw FerryProtocolError.unexpected(message.frameType, in: "when a request is expected")
        }
        return true
    }

    /// Whether this client may do what `needed` allows; if not, the request is refused (110) and this returns
    /// `false`.
    private mutating func permits(_ needed: Permission, _ record: RequestRecord) async throws -> Bool {
        if let permission = self.permission, permission >= needed {
            return true
        }
        let message =
            if let permission = self.permission {
                "\(record.operation) needs \(needed) permission; \(self.user.map { "'\($0)'" } ?? "this client") has only \(permission) permission"
            } else {
                "\(record.operation) needs \(needed) permission; log in first (AUTH): this server lets anonymous clients do nothing"
            }
        try await self.refuse(.permissionDenied, message, record)
        return false
    }

    /// AUTH: checks the password on the thread pool (scrypt takes tens of milliseconds of CPU), and answers a
    /// failure only after the delay the client's host has earned (``LoginThrottle``). Too many failures on one
    /// connection close it (211).
    private mutating func logIn(_ request: AuthRequest) async throws {
        let record = RequestRecord(operation: "AUTH", name: nil)
        guard let users = self.configuration.users else {
            try await self.refuse(.unsupported, "this server has no accounts: there is nothing to log in to", record)
            return
        }
        // Throws LoginThrottle.Busy past the queue of checks: a connection error (208).
        let account = try await self.logins.check(from: PeerAddress(self.channel.remoteAddress)) {
            users.authenticate(request.user, password: request.password)
        }
        guard let account else {
            self.loginFailures += 1
            // The name only if it is an account's: a password typed into the name field must not reach the log.
            let attempted = users.accounts[request.user] == nil ? "unknown" : request.user
            self.logger.warning(
                "log-in failed",
                metadata: ["attempted_user": "\(attempted)", "failures": "\(self.loginFailures)"]
            )
            guard self.loginFailures < self.configuration.maximumLoginFailures else {
                throw TooManyFailedLogins(count: self.loginFailures)
            }
            try await self.refuse(.authenticationFailed, "wrong user name or password", record)
            return
        }
        self.user = request.user
        self.permission = account.permission
        self.logger[metadataKey: "user"] = "\(request.user)"
        try await self.reply(.ok)
        self.log(record, bytes: 0, result: "ok (\(account.permission) permission)")
    }

    /// Runs a library operation that has no reply but OK, answering OK or its error.
    private mutating func perform(
        _ record: RequestRecord,
        _ operation: (FileLibrary) async throws -> Void
    ) async throws {
        do {
            try await operation(self.library)
        } catch let error as LibraryError {
            try await self.refuse(error, record)
            return
        }
        try await self.reply(.ok)
        self.log(record, bytes: 0, result: "ok")
    }

    /// Sends the listing as it is made: the names first (one job), then their sizes and times in batches, two
    /// jobs at a time on the thread pool, each batch written while the next ones are looked up. The client starts
    /// reading a large listing long before the last `stat` returns.
    private mutating func list(_ record: RequestRecord) async throws {
        let budget = self.listBatchBudget
        if let cached = self.library.listingCache.listing(batchBudget: budget) {
            try await self.write(encoded: cached.frames)
            self.log(record, bytes: UInt64(cached.count), result: "ok (unchanged since the last listing)")
            return
        }
        let generation = self.library.listingCache.generation()
        // What was sent, kept for the cache unless the listing grows past what the cache keeps.
        var encoded = ByteBuffer()
        var cacheable = true
        var count = 0
        do {
            let batches = try await self.library.listNames().chunks(of: Self.listBatchLength)
            for start in stride(from: 0, to: batches.count, by: 2) {
                let library = self.library
                let current = batches[start]
                let next = start + 1 < batches.count ? batches[start + 1] : []
                async let first = library.describe(current)
                async let second = next.isEmpty ? [] : library.describe(next)
                for entries in [try await first, try await second] where !entries.isEmpty {
                    count += entries.count
                    var batch = ByteBuffer()
                    for frame in self.listFrames(entries) {
                        FrameSerializer.serialize(frame, into: &batch)
                    }
                    if cacheable {
                        encoded.writeImmutableBuffer(batch)
                        if encoded.readableBytes > ListingCache.maximumEncodedLength {
                            cacheable = false
                            encoded = ByteBuffer()
                        }
                    }
                    try await self.write(encoded: batch)
                }
            }
        } catch let error as LibraryError {
            // Before LIST_END, an ERROR ends the listing: the client drops what it received.
            try await self.refuse(error, record)
            return
        }
        let end = Message.listEnd(ListEnd(count: UInt64(count)))
        if cacheable {
            FrameSerializer.serialize(end, into: &encoded)
            self.library.listingCache.keep(
                ListingCache.Listing(frames: encoded, batchBudget: budget, count: count),
                madeAt: generation
            )
        }
        try await self.reply(end)
        self.log(record, bytes: UInt64(count), result: "ok")
    }

    /// Writes frames already encoded, after the replies queued before them.
    private mutating func write(encoded frames: ByteBuffer) async throws {
        try await self.commitGroup()
        try await self.flush()
        try await self.writer.writeRaw(frames)
    }

    /// Names per listing batch.
    private static let listBatchLength = 1024

    /// The entry bytes one LIST_ENTRIES frame carries: up to the client's limit, and at most 256 KiB.
    private var listBatchBudget: Int {
        min(self.writer.peerMaximumPayloadLength, 256 * 1024) - ListEntry.batchHeaderLength
    }

    /// LIST_ENTRIES frames for these entries, each filled up to ``listBatchBudget``.
    private func listFrames(_ entries: [ListEntry]) -> [Message] {
        let budget = self.listBatchBudget
        var messages: [Message] = []
        var batch: [ListEntry] = []
        var batchLength = 0
        for entry in entries {
            if batchLength + entry.encodedLength > budget, !batch.isEmpty {
                messages.append(.listEntries(batch))
                batch.removeAll(keepingCapacity: true)
                batchLength = 0
            }
            batch.append(entry)
            batchLength += entry.encodedLength
        }
        if !batch.isEmpty {
            messages.append(.listEntries(batch))
        }
        return messages
    }

    private mutating func retrieve(_ request: RetrieveRequest, _ record: RequestRecord) async throws {
        let whole: WholeFile?
        do {
            whole = try await self.readSmallFile(request.name)
        } catch let error as LibraryError {
            try await self.refuse(error, record)
            return
        }
        if let whole {
            try await self.send(whole, request, record)
            return
        }
        // TLS must encrypt every byte, so it cannot hand a file to the kernel.
        let lookup = self.configuration.tls == nil ? try await self.library.openWithChecksums(request.name) : .noTable
        if case .sendable(let file) = lookup {
            let identity = file.checksums.identity
            var request = request
            request.offset = self.startingOffset(
                request,
                for: FileVersion(size: identity.size, modified: identity.modified)
            )
            if let pieces = file.checksums.pieces(from: request.offset, within: self.writer.peerMaximumPayloadLength),
                let prefix = file.checksums.crc32(upTo: request.offset)
            {
                try await self.send(file, pieces, request, prefix: prefix, record)
                return
            }
            try? file.handle.close()
        }
        let file: ReadableFile
        do {
            file = try await self.library.openForReading(request.name)
        } catch let error as LibraryError {
            try await self.refuse(error, record)
            return
        }
        var request = request
        request.offset = self.startingOffset(request, for: FileVersion(size: file.size, modified: file.modified))
        guard request.offset <= file.size else {
            try? await file.handle.closeRegardlessOfCancellation()
            try await self.refuseOffset(request, size: file.size, record)
            return
        }
        guard try await self.accepts(size: file.size, request, record) else {
            try? await file.handle.closeRegardlessOfCancellation()
            return
        }
        let transfer: OutgoingTransfer
        let unchanged: Bool
        let prefix: UInt32
        do {
            prefix = try await self.checksumBeforeOffset(file, request)
            try await self.reply(.fileInfo(FileInfo(size: file.size, offset: request.offset, modified: file.modified)))
            try await self.flush()
            var checksums = ChunkChecksumBuilder()
            let writer = self.writer
            let budget = self.transfers
            transfer = try await self.writer.sendFile(
                file.handle,
                from: request.offset,
                to: file.size,
                on: self.channel,
                reserve: { budget.reserve(preferred: writer.dataChunkLength(forTransferOf: $0)) },
                release: { budget.release($0) },
                sentChunk: { checksums.append(length: $0, crc32: $1) }
            )
            Self.releaseMemory(afterMoving: transfer.sentLength)
            // Rewritten in place while it was read, the file would reach the client as old bytes then new ones, every
            // CRC matching what was read: END would vouch for a file that never existed.
            unchanged = await self.library.isUnchanged(file)
            if unchanged, case .noTable = lookup, request.offset == 0, transfer.sentLength == file.size,
                self.configuration.tls == nil
            {
                // Checksummed whole: the next download of this file is sent from the table (never under TLS,
                // which cannot use it).
                await self.library.keepChecksums(checksums, of: file, as: request.name)
            }
            try? await file.handle.closeRegardlessOfCancellation()
        } catch let error as FileReadError {
            try? await file.handle.closeRegardlessOfCancellation()
            try await self.refuse(.storageFailure, "reading '\(request.name)' failed: \(error)", record)
            return
        } catch {
            try? await file.handle.closeRegardlessOfCancellation()
            throw error
        }
        guard transfer.sentLength == file.size - request.offset, unchanged else {
            // END would be a lie: the file shrank, or was written to, while being read.
            try await self.refuse(.storageFailure, "'\(request.name)' changed while being sent", record)
            return
        }
        try await self.reply(.end(self.end(of: transfer, after: prefix)))
        self.log(record, bytes: transfer.sentLength, result: "ok")
    }

    /// Where a download starts: at its offset, unless version 3's condition names another version of the file than
    /// this one; then at 0, and the whole file goes (as HTTP's If-Range).
    private func startingOffset(_ request: RetrieveRequest, for current: FileVersion) -> UInt64 {
        guard self.version >= Handshake.resumeVersion, let expected = request.ifUnchanged else { return request.offset }
        return expected == current ? request.offset : 0
    }

    /// END of a download; version 3 adds the whole file's CRC-32: the CRC of the bytes before the offset
    /// (`prefix`, only computed then) combined with that of the bytes sent.
    private func end(of transfer: OutgoingTransfer, after prefix: @autoclosure () -> UInt32) -> EndOfData {
        var end = transfer.end
        if self.version >= Handshake.resumeVersion {
            end.fileCRC32 = CRC32.combine(prefix(), end.crc32, secondLength: end.length)
        }
        return end
    }

    /// The CRC-32 of the bytes before a resumed download's offset, read from the open file (the same one whose
    /// rest is sent, and whose changes ``FileLibrary/isUnchanged(_:)`` catches): only in version 3, where END
    /// carries the whole file's CRC, and only when the offset is not 0.
    private func checksumBeforeOffset(_ file: ReadableFile, _ request: RetrieveRequest) async throws -> UInt32 {
        guard self.version >= Handshake.resumeVersion, request.offset > 0 else { return 0 }
        return try await self.library.checksum(file, upTo: request.offset)
    }

    /// `name` read whole if it fits one DATA frame (`nil` if larger), from the read-ahead when it is there.
    ///
    /// With the read-ahead empty, the RETRs already received behind this one are taken from the reader and their
    /// files read in the same thread-pool job, up to ``readAheadLimit``. Each is read before its turn but after
    /// every request before it: nothing between them is handled but these same RETRs.
    private mutating func readSmallFile(_ name: String) async throws -> WholeFile? {
        if self.readAhead.isEmpty {
            var names = [name]
            for case .success(.retrieve(let request)) in self.requestsTakenEarly.prefix(while: \.isRetrieval) {
                names.append(request.name)
            }
            while names.count < Self.readAheadLimit.requests, self.requestsTakenEarly.last?.isRetrieval ?? true,
                let next = self.takeBufferedRequest()
            {
                self.requestsTakenEarly.append(next)
                if case .success(.retrieve(let request)) = next {
                    names.append(request.name)
                }
            }
            let reads = try await self.library.readWhole(
                names,
                upTo: self.writer.dataChunkLength,
                budget: Self.readAheadLimit.bytes
            )
            self.readAhead = Array(zip(names, reads)).map { (name: $0, read: $1) }
        }
        guard let next = self.readAhead.first, next.name == name else {
            self.readAhead.removeAll()
            return try await self.library.readWhole(name, upTo: self.writer.dataChunkLength)
        }
        self.readAhead.removeFirst()
        return try next.read.get()
    }

    /// Takes the next request from the reader if it has fully arrived, without waiting; `nil` if none has. It
    /// bypasses ``requestsTakenEarly``: only for filling it.
    private mutating func takeBufferedRequest() -> Result<Message, any Error>? {
        do {
            return try self.reader.nextIfBuffered().map { .success($0) }
        } catch {
            return .failure(error)
        }
    }

    /// Sends a file from its checksum table: FILE_INFO, then each piece as a DATA frame whose payload goes from
    /// the file to the socket by `sendfile`, then END from the table's CRC-32s.
    private mutating func send(
        _ file: ChecksummedFile,
        _ pieces: [ChecksummedPiece],
        _ request: RetrieveRequest,
        prefix: UInt32,
        _ record: RequestRecord
    ) async throws {
        let identity = file.checksums.identity
        guard try await self.accepts(size: identity.size, request, record) else {
            try? file.handle.close()
            return
        }
        let transfer: OutgoingTransfer
        let unchanged: Bool
        do {
            try await self.reply(
                .fileInfo(FileInfo(size: identity.size, offset: request.offset, modified: identity.modified))
            )
            try await self.flush()
            transfer = try await self.writer.sendFile(
                file.handle,
                pieces: pieces,
                on: self.channel,
                currentSize: file.currentSize
            )
            unchanged = file.isUnchanged(in: self.library)
            try? file.handle.close()
        } catch let error as FileReadError {
            try? file.handle.close()
            try await self.refuse(.storageFailure, "reading '\(request.name)' failed: \(error)", record)
            return
        } catch {
            try? file.handle.close()
            throw error
        }
        guard unchanged else {
            // Written to in place while it was sent: its table no longer describes what went out.
            try await self.refuse(.storageFailure, "'\(request.name)' changed while being sent", record)
            return
        }
        try await self.reply(.end(self.end(of: transfer, after: prefix)))
        self.log(record, bytes: transfer.sentLength, result: "ok")
    }

    /// Whether the client takes files of `size` bytes (the `max_file_size` of its HELLO, SPEC.md §7.2); if not, the
    /// RETR is refused (103) before anything is sent, and this returns `false`.
    private mutating func accepts(
        size: UInt64,
        _ request: RetrieveRequest,
        _ record: RequestRecord
    ) async throws -> Bool {
        guard size > self.peerMaximumFileSize else { return true }
        try await self.refuse(
            .fileTooLarge,
            "'\(request.name)' is \(size) bytes, more than this client accepts (\(self.peerMaximumFileSize))",
            record
        )
        return false
    }

    /// Sends a file that fits one DATA frame: FILE_INFO, DATA and END in one write.
    private mutating func send(_ file: WholeFile, _ request: RetrieveRequest, _ record: RequestRecord) async throws {
        let size = UInt64(file.bytes.readableBytes)
        var request = request
        request.offset = self.startingOffset(request, for: FileVersion(size: size, modified: file.modified))
        guard try await self.accepts(size: size, request, record) else { return }
        guard request.offset <= size else {
            try await self.refuseOffset(request, size: size, record)
            return
        }
        var messages: [Message] = [.fileInfo(FileInfo(size: size, offset: request.offset, modified: file.modified))]
        var transfer = OutgoingTransfer()
        if request.offset < size {
            let chunk = DataChunk(
                file.bytes.getSlice(at: Int(request.offset), length: Int(size - request.offset)) ?? ByteBuffer()
            )
            transfer.record(chunk)
            messages.append(.data(chunk))
        }
        let offset = Int(request.offset)
        messages.append(
            .end(
                self.end(
                    of: transfer,
                    after: CRC32.checksum(file.bytes.getSlice(at: 0, length: offset) ?? ByteBuffer())
                )
            )
        )
        try await self.reply(messages)
        self.log(record, bytes: transfer.sentLength, result: "ok")
    }

    private mutating func store(_ request: StoreRequest, _ record: RequestRecord) async throws {
        // Version 4: a large upload is kept if it is cut, and a token resumes one (SPEC.md §7.3). Older sessions
        // ignore the token, an appended field (§10).
        let resumable = self.version >= Handshake.resumableUploadVersion && !Self.isSmall(request)
        let token = resumable ? request.resumeToken : nil
        let refusal: (ErrorCode, String)? =
            if !StoreOptions.known.isSuperset(of: request.options) {
                (.unsupported, "unknown STOR options 0x\(String(request.options.rawValue, radix: 16))")
            } else if request.offset != 0, token == nil {
                (
                    .unsupported,
                    self.version >= Handshake.resumableUploadVersion
                        ? "a STOR offset (\(request.offset)) needs the token of the upload it resumes"
                        : "resuming an upload (offset \(request.offset)) needs protocol version 4"
                )
            } else if request.offset > request.size {
                (.invalidOffset, "offset \(request.offset) is beyond the upload's size (\(request.size) bytes)")
            } else if request.size > self.configuration.maximumFileSize {
                (
                    .fileTooLarge,
                    "\(request.size) bytes is more than this server accepts (\(self.configuration.maximumFileSize))"
                )
            } else {
                nil
            }
        if let (code, message) = refusal {
            // The client may have sent the data without waiting for READY (SPEC.md §7.3): drop it.
            self.skippingRefusedUpload = true
            try await self.refuse(code, message, record)
            return
        }
        // The token is looked up before the name: an upload committed already holds its name.
        var claimed: (StagingFile, KeptUploadHandle)?
        if let token {
            switch await self.library.claimKeptUpload(
                token,
                name: request.name,
                size: request.size,
                user: self.user,
                upTo: request.offset
            ) {
            case .resumed(let staging, let handle):
                claimed = (staging, handle)
            case .committed(let kept):
                try await self.receive(request, committedAs: kept, token: token, record)
                return
            case .inProgress:
                self.skippingRefusedUpload = true
                try await self.refuse(
                    .uploadInProgress,
                    "the upload of '\(request.name)' this token names is being received on another connection; "
                        + "try again shortly",
                    record
                )
                return
            case .unknown:
                break
            }
        }
        // A small upload is checked in its group commit's job instead (which would refuse a taken name anyway): one
        // thread-pool job fewer per file lets a session commit thousands per second.
        if !request.options.contains(.overwrite), !Self.isSmall(request),
            (try? await self.library.exists(request.name)) == true
        {
            if let (staging, _) = claimed { await self.library.release(staging) }
            self.skippingRefusedUpload = true
            try await self.refuse(.fileExists, LibraryError.fileExists(request.name).description, record)
            return
        }
        // An upload that fits one DATA frame is gathered in memory and committed in one job; a larger one is
        // streamed into a staging file as it arrives. Either way at most one frame's worth is held.
        let destination: Upload.Destination
        var kept: KeptUploadHandle?
        if Self.isSmall(request) {
            destination = .memory(self.channel.allocator.buffer(capacity: Int(request.size)))
        } else {
            do {
                if let (staging, handle) = claimed {
                    destination = .staging(staging, offset: Int64(handle.record.kept))
                    kept = handle
                } else if resumable {
                    let (staging, handle) = try await self.library.beginKeptUpload(
                        name: request.name,
                        size: request.size,
                        overwrite: request.options.contains(.overwrite),
                        user: self.user
                    )
                    destination = .staging(staging, offset: 0)
                    kept = handle
                } else {
                    destination = .staging(try await self.library.createStagingFile(), offset: 0)
                }
            } catch let error as LibraryError {
                self.skippingRefusedUpload = true
                try await self.refuse(error, record)
                return
            }
        }
        let offset = kept?.record.kept ?? 0
        var upload = Upload(
            destination: destination,
            transfer: IncomingTransfer(expectedLength: request.size - offset),
            kept: kept
        )
        upload.lastCheckpoint = offset
        defer { Self.releaseMemory(afterMoving: upload.transfer.receivedLength) }
        do {
            if case .staging = destination {
                try await self.reply(.ready(Ready(offset: offset, token: kept?.token)))
                upload.readySent = true
                if offset > 0 {
                    self.logger.debug(
                        "resuming an upload",
                        metadata: ["name": "\(request.name)", "offset": "\(offset)", "size": "\(request.size)"]
                    )
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { writes in
                do {
                    try await self.receive(&upload, request: request, record, writes: &writes)
                } catch {
                    // The staging file is released only once no write to it is running; one that succeeded still
                    // counts for what is kept.
                    if (try? await writes.waitForAll()) != nil {
                        upload.confirmWrite()
                    }
                    await writes.drain()
                    throw error
                }
            }
        } catch {
            // Cut short (the connection lost, timed out, broken, or the server stopping): a resumable upload keeps
            // what was verified and written, for its client to resume.
            if case .staging(let staging, _) = upload.destination, let kept = upload.kept, !upload.refused {
                upload.destination = .released
                let keptIt = await self.library.keep(staging, kept)
                self.log(
                    record,
                    bytes: upload.transfer.receivedLength,
                    result: "cut: \(error)" + (keptIt ? "; kept \(kept.record.kept) bytes to resume" : ""),
                    outcome: .cut
                )
            } else {
                await self.release(&upload)
                self.log(record, bytes: upload.transfer.receivedLength, result: "failed: \(error)", outcome: .cut)
            }
            throw error
        }
    }

    /// Answers a STOR whose token names an upload committed already: READY at its end, and after the client's END
    /// (no data, and the whole file's CRC-32), OK if that CRC is the one committed. The client's first OK was lost.
    private mutating func receive(
        _ request: StoreRequest,
        committedAs kept: KeptUploadRecord,
        token: UploadToken,
        _ record: RequestRecord
    ) async throws {
        var upload = Upload(
            destination: .committed(fileCRC32: kept.crc32),
            transfer: IncomingTransfer(expectedLength: 0),
            kept: nil
        )
        try await self.reply(.ready(Ready(offset: kept.size, token: token)))
        upload.readySent = true
        try await withThrowingTaskGroup(of: Void.self) { writes in
            try await self.receive(&upload, request: request, record, writes: &writes)
        }
    }

    /// After a bulk transfer, gives what its buffers left free in the heap back to the system.
    private static func releaseMemory(afterMoving length: UInt64) {
        if length >= ProtocolLimits.bulkTransferThreshold {
            TransferMemory.releaseFreeMemory()
        }
    }

    /// Whether an upload fits one DATA frame: gathered in memory and committed with others (a group commit).
    private static func isSmall(_ request: StoreRequest) -> Bool {
        request.size <= UInt64(ProtocolLimits.defaultDataChunkLength)
    }

    private struct Upload {
        enum Destination {
            /// A small upload, gathered until END.
            case memory(ByteBuffer)
            /// A large upload, written to the staging file as it arrives; `offset` is where the next bytes go.
            case staging(StagingFile, offset: Int64)
            /// An upload resumed after it was committed (version 4): nothing is to be received, and END must carry
            /// this whole-file CRC-32.
            case committed(fileCRC32: UInt32)
            /// Failed and answered, or committed: nothing more is kept.
            case released
        }

        var destination: Destination
        var transfer: IncomingTransfer
        /// A resumable upload's token, files and record (version 4). Its record counts the bytes written for sure:
        /// those before `offset` and every write confirmed since.
        var kept: KeptUploadHandle?
        /// The write in flight: its length and CRC-32, counted in `kept` once it is confirmed.
        var unconfirmed: (length: UInt64, crc32: UInt32)?
        /// How far the last record written reached.
        var lastCheckpoint: UInt64 = 0

        /// Counts the write in flight as done: it succeeded.
        mutating func confirmWrite() {
            guard let (length, crc32) = self.unconfirmed else { return }
            self.unconfirmed = nil
            if var kept = self.kept {
                kept.record.crc32 = CRC32.combine(kept.record.crc32, crc32, secondLength: length)
                kept.record.kept += length
                self.kept = kept
            }
        }
        /// The pieces it arrived in, for the file's checksum table (large uploads only).
        var checksums = ChunkChecksumBuilder()
        /// Set once the upload has failed and been answered: the rest of its frames are read and dropped.
        var refused = false
        /// A small upload's READY is held back while its data is already here (a pipelining client): READY and
        /// the answer then go out together after a group commit. It is sent as soon as the session has to wait.
        var readySent = false
    }

    /// A small upload waiting for its group commit.
    private struct VerifiedUpload {
        let upload: SmallUpload
        let readySent: Bool
        let record: RequestRecord
    }

    /// Receives DATA until END or ABORT (SPEC.md §7.3).
    ///
    /// A large upload's chunks are written to the staging file by a child task in `writes`, one at a time, while
    /// the next frame is read and checked: verifying and writing overlap instead of taking turns.
    private mutating func receive(
        _ upload: inout Upload,
        request: StoreRequest,
        _ record: RequestRecord,
        writes: inout ThrowingTaskGroup<Void, any Error>
    ) async throws {
        while true {
            var next: Message?
            do {
                next = try self.bufferedMessage()
                if next == nil {
                    if !upload.readySent, !upload.refused {
                        // The client is waiting for READY (or its data is still on the way).
                        try await self.reply(.ready(Ready(offset: 0)))
                        upload.readySent = true
                    }
                    next = try await self.nextMessage()
                }
            } catch let error as FerryProtocolError where error.kind == .invalidName {
                // A request during an upload is a protocol violation (SPEC.md §8) whatever its name.
                throw FerryProtocolError.unexpected(error.frameType ?? .store, in: "during an upload")
            }
            guard let message = next else {
                throw TransportError.connectionClosed(midFrame: true)
            }
            switch message {
            case .data(let chunk) where upload.refused:
                _ = chunk
            case .data(let chunk):
                do {
                    try upload.transfer.receive(chunk)
                } catch {
                    try await self.abandon(&upload, &writes, error.errorCode, error.description, record)
                    continue
                }
                switch upload.destination {
                case .memory(var bytes):
                    upload.destination = .released
                    chunk.forEachPiece { bytes.writeImmutableBuffer($0) }
                    upload.destination = .memory(bytes)
                case .staging(let staging, let offset):
                    guard try await self.finishWrites(&writes, &upload, record) else { continue }
                    let handle = staging.handle
                    let length = UInt64(chunk.length)
                    upload.unconfirmed = (length, chunk.crc32)
                    // Every so often a resumable upload's record is brought up to date, this chunk included, in the
                    // same job that writes it (after flushing it): the record never names a byte not on disk.
                    var checkpoint: (record: KeptUploadRecord, name: String, folder: PinnedFolder)?
                    if let kept = upload.kept,
                        kept.record.kept + length - upload.lastCheckpoint >= self.library.keptUploads.checkpointInterval
                    {
                        var next = kept.record
                        next.crc32 = CRC32.combine(next.crc32, chunk.crc32, secondLength: length)
                        next.kept += length
                        checkpoint = (next, kept.fileName, kept.folder)
                        upload.lastCheckpoint = next.kept
                    }
                    let due = checkpoint
                    writes.addTask {
                        try await handle.withUnsafeDescriptor { descriptor in
                            if let failure = BlockingFileIO.writeHandingToDisk(descriptor.rawValue, chunk, at: offset) {
                                throw failure
                            }
                            if let checkpoint = due,
                                let failure = KeptUploads.checkpoint(
                                    descriptor.rawValue,
                                    checkpoint.record,
                                    checkpoint.name,
                                    in: checkpoint.folder
                                )
                            {
                                throw failure
                            }
                        }
                    }
                    upload.checksums.append(length: chunk.length, crc32: chunk.crc32)
                    upload.destination = .staging(staging, offset: offset + Int64(chunk.length))
                case .committed, .released:
                    break
                }
            case .end where upload.refused, .abort where upload.refused:
                return
            case .abort:
                try await self.abandon(
                    &upload,
                    &writes,
                    .aborted,
                    "the upload of '\(request.name)' was aborted by the client",
                    record
                )
                return
            case .end(let end):
                guard try await self.finishWrites(&writes, &upload, record) else { return }
                do {
                    try upload.transfer.verify(end)
                } catch {
                    try await self.abandon(
                        &upload,
                        &writes,
                        error.errorCode,
                        "'\(request.name)' not stored: \(error)",
                        record
                    )
                    return
                }
                if let refusal = Self.wholeFileRefusal(of: upload, end, request) {
                    try await self.abandon(&upload, &writes, .checksumMismatch, refusal, record)
                    return
                }
                let destination = upload.destination
                upload.destination = .released
                let overwrite = request.options.contains(.overwrite)
                switch destination {
                case .memory(let bytes):
                    let verified = SmallUpload(bytes: bytes, name: request.name, overwrite: overwrite)
                    self.uncommitted.append(
                        VerifiedUpload(upload: verified, readySent: upload.readySent, record: record)
                    )
                    self.uncommittedBytes += bytes.readableBytes
                    if upload.readySent || self.uncommitted.count >= Self.groupCommitLimit.uploads
                        || self.uncommittedBytes >= Self.groupCommitLimit.bytes
                    {
                        try await self.commitGroup()
                    }
                case .staging(let staging, _):
                    do {
                        if let kept = upload.kept {
                            try await self.library.commit(
                                staging,
                                kept,
                                fileCRC32: kept.record.crc32,
                                checksums: upload.checksums
                            )
                        } else {
                            try await self.library.commit(
                                staging,
                                as: request.name,
                                overwrite: overwrite,
                                checksums: upload.checksums
                            )
                        }
                    } catch let error as LibraryError {
                        try await self.refuse(error, record)
                        return
                    }
                    try await self.reply(.ok)
                    self.log(record, bytes: upload.transfer.receivedLength, result: "ok")
                case .committed:
                    try await self.reply(.ok)
                    self.log(record, bytes: 0, result: "ok (committed before; the client's OK was lost)")
                case .released:
                    break
                }
                return
            default:
                throw FerryProtocolError.unexpected(message.frameType, in: "during an upload")
            }
        }
    }

    /// Waits for the staging write in flight. If it failed, the upload is abandoned (and answered) and this
    /// returns `false`.
    private mutating func finishWrites(
        _ writes: inout ThrowingTaskGroup<Void, any Error>,
        _ upload: inout Upload,
        _ record: RequestRecord
    ) async throws -> Bool {
        do {
            try await writes.waitForAll()
            upload.confirmWrite()
            return true
        } catch {
            try await self.abandon(&upload, &writes, .storageFailure, "writing the upload failed: \(error)", record)
            return false
        }
    }

    /// Fails an upload in progress: drops what it holds and answers at once; later frames are dropped. The
    /// staging file is removed only once no write to it is running.
    private mutating func abandon(
        _ upload: inout Upload,
        _ writes: inout ThrowingTaskGroup<Void, any Error>,
        _ code: ErrorCode,
        _ message: String,
        _ record: RequestRecord
    ) async throws {
        upload.refused = true
        await writes.drain()
        await self.release(&upload)
        try await self.refuse(code, message, record)
    }

    /// Removes the staging file of an upload that will not be committed.
    private func release(_ upload: inout Upload) async {
        if case .staging(let staging, _) = upload.destination {
            if let kept = upload.kept {
                await self.library.discard(staging, kept)
            } else {
                await self.library.discard(staging)
            }
        }
        upload.destination = .released
    }

    /// Why an upload whose bytes arrived intact is still not the client's file: the whole-file CRC-32 its END
    /// carries (version 4) is not that of the bytes kept before and received now. `nil` if it is, or not given for
    /// an upload from byte 0.
    private static func wholeFileRefusal(of upload: Upload, _ end: EndOfData, _ request: StoreRequest) -> String? {
        let whole: UInt32
        let resumed: Bool
        switch upload.destination {
        case .committed(let fileCRC32):
            (whole, resumed) = (fileCRC32, true)
        case .staging where upload.kept != nil:
            let kept = upload.kept?.record.crc32 ?? 0
            (whole, resumed) = (kept, upload.transfer.expectedLength < request.size)
        default:
            (whole, resumed) = (upload.transfer.crc32, false)
        }
        guard let declared = end.fileCRC32 else {
            return resumed
                ? "'\(request.name)' not stored: a resumed upload's END must carry the whole file's CRC-32" : nil
        }
        guard declared != whole else { return nil }
        return
            "'\(request.name)' not stored: END declares the whole file's CRC-32 \(CRC32.hex(declared)), but the bytes "
            + "kept and received give \(CRC32.hex(whole))"
            + (resumed ? "; the kept part was dropped, so the next attempt starts from the beginning" : "")
    }

    // MARK: - Errors

    /// Answers a request with a request error: the connection stays usable.
    private mutating func refuse(_ code: ErrorCode, _ message: String, _ record: RequestRecord) async throws {
        self.log(record, bytes: 0, result: "error \(code.rawValue): \(message)", outcome: .refused(code))
        try await self.reply(.error(ErrorReply(code: code, message: message)))
    }

    private mutating func refuse(_ error: LibraryError, _ record: RequestRecord) async throws {
        try await self.refuse(error.errorCode, error.description, record)
    }

    /// A RETR whose offset lies past the end of the file.
    private mutating func refuseOffset(_ request: RetrieveRequest, size: UInt64, _ record: RequestRecord) async throws {
        try await self.refuse(
            .invalidOffset,
            "offset \(request.offset) is beyond the end of '\(request.name)' (\(size) bytes)",
            record
        )
    }

    /// Ends the session on a connection-level failure: tells the client why when it can, then closes.
    private mutating func fail(with error: any Error) async -> String {
        // Uploads already verified are committed (and answered, if the client is still there) whatever ends
        // the session.
        try? await self.commitGroup()
        let reply: ErrorReply?
        switch error {
        case let error as FerryProtocolError:
            reply = ErrorReply(code: error.errorCode, message: error.detail)
        case ConnectionInterruption.idleTimeout:
            reply = ErrorReply(code: .idleTimeout, message: "idle for longer than \(self.configuration.idleTimeout)")
        case is LoginThrottle.Busy:
            reply = ErrorReply(
                code: .serverBusy,
                message: "server busy: too many log-ins are being checked; try again later"
            )
        case let error as TooManyFailedLogins:
            reply = ErrorReply(code: .tooManyFailedLogins, message: error.description)
        case let error as FrameBudgetExhausted:
            reply = ErrorReply(code: .serverBusy, message: error.description)
        case ConnectionInterruption.frameTooSlow:
            reply = ErrorReply(
                code: .idleTimeout,
                message: "a frame took longer than \(self.configuration.idleTimeout) to arrive"
            )
        case ConnectionInterruption.handshakeTimeout:
            reply = ErrorReply(
                code: .idleTimeout,
                message: "no handshake within \(self.configuration.handshakeTimeout)"
            )
        case ConnectionInterruption.shuttingDown:
            reply = ErrorReply(code: .shuttingDown, message: "the server is shutting down")
        default:
            // The connection itself failed (reset, closed mid-frame, cancelled, TLS): nobody is left to tell.
            return TLSFailure.describe(error) ?? "\(error)"
        }
        guard let reply else { return "\(error)" }
        if self.sentMagic {
            try? await self.reply(.error(reply))
            try? await self.flush()
        } else {
            self.sentMagic = true
            try? await self.writer.writeMagic(then: .error(reply))
        }
        self.writer.finish()
        await self.linger()
        return reply.description
    }

    // MARK: - Replies

    /// Queues replies, writing them once they reach ``unsentLimit``; ``nextMessage()`` writes the rest before it
    /// waits.
    private mutating func reply(_ messages: Message...) async throws {
        try await self.reply(messages)
    }

    private mutating func reply(_ messages: [Message]) async throws {
        try await self.commitGroup()
        for message in messages {
            FrameSerializer.serialize(message, into: &self.unsent)
        }
        if self.unsent.readableBytes >= Self.unsentLimit {
            try await self.flush()
        }
    }

    /// Commits the small uploads waiting for it, in one job, and queues their answers in order: READY (unless
    /// it went out already), then OK or the ERROR that stopped the commit.
    private mutating func commitGroup() async throws {
        guard !self.uncommitted.isEmpty else { return }
        let group = self.uncommitted
        self.uncommitted.removeAll()
        self.uncommittedBytes = 0
        let outcomes = await self.library.commit(group.map(\.upload))
        for (entry, failure) in zip(group, outcomes) {
            if !entry.readySent {
                FrameSerializer.serialize(.ready(Ready(offset: 0)), into: &self.unsent)
            }
            if let failure {
                self.log(
                    entry.record,
                    bytes: 0,
                    result: "error \(failure.errorCode.rawValue): \(failure)",
                    outcome: .refused(failure.errorCode)
                )
                FrameSerializer.serialize(
                    .error(ErrorReply(code: failure.errorCode, message: failure.description)),
                    into: &self.unsent
                )
            } else {
                self.log(entry.record, bytes: UInt64(entry.upload.bytes.readableBytes), result: "ok")
                FrameSerializer.serialize(.ok, into: &self.unsent)
            }
        }
    }

    /// Writes the queued replies.
    private mutating func flush() async throws {
        guard self.unsent.readableBytes > 0 else { return }
        let bytes = self.unsent
        self.unsent = self.channel.allocator.buffer(capacity: 0)
        try await self.writer.writeRaw(bytes)
    }

    /// The next message: one already received if there is one, otherwise the queued replies are written first
    /// (the client may be waiting for them) and then the session waits.
    private mutating func nextMessage() async throws -> Message? {
        if let message = try self.bufferedMessage() {
            return message
        }
        try await self.commitGroup()
        try await self.flush()
        return try await self.reader.next()
    }

    /// The next message if it has already arrived (taken ahead of its turn, or whole in the reader).
    private mutating func bufferedMessage() throws -> Message? {
        if !self.requestsTakenEarly.isEmpty {
            return try self.requestsTakenEarly.removeFirst().get()
        }
        return try self.reader.nextIfBuffered()
    }

    /// After the last word: read and drop what still arrives, for a bounded time, so the client reads our ERROR
    /// instead of a connection reset.
    private mutating func linger() async {
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: TimeAmount(self.configuration.lingerTimeout)) {
            channel.close(promise: nil)
        }
        await self.reader.drain(upTo: 1 << 20)
    }

    /// The request's log line: peer (in the logger's metadata), operation, name, bytes, duration and result.
    private func log(_ record: RequestRecord, bytes: UInt64, result: String, outcome: ServerMetrics.Outcome = .ok) {
        let elapsed = ContinuousClock.now - record.started
        ServerMetrics.record(operation: record.operation, outcome: outcome, bytes: bytes, duration: elapsed)
        // Building the metadata costs more than the rest of a small upload's bookkeeping: only when it is printed.
        guard self.logger.logLevel <= .info else { return }
        var metadata: Logger.Metadata = [
            "user": "\(self.user ?? "anonymous")",
            "operation": "\(record.operation)",
            "bytes": "\(bytes)",
            "duration_ms": "\(elapsed.milliseconds)",
            "result": "\(result)",
        ]
        if let name = record.name {
            metadata["name"] = "\(name)"
        }
        if let newName = record.newName {
            metadata["new_name"] = "\(newName)"
        }
        self.logger.info("request", metadata: metadata)
    }
}

/// What a request's log line says about it, gathered as the request is handled.
private struct RequestRecord {
    let operation: String
    let name: String?
    var newName: String? = nil
    let started = ContinuousClock.now
}

extension Result<Message, any Error> {
    /// Whether this is a RETR taken ahead of its turn.
    fileprivate var isRetrieval: Bool {
        if case .success(.retrieve) = self { true } else { false }
    }
}

/// A connection's AUTHs failed as many times as the server allows.
struct TooManyFailedLogins: Error, CustomStringConvertible {
    var count: Int

    var description: String {
        "\(self.count) failed log-ins on this connection"
    }
}
