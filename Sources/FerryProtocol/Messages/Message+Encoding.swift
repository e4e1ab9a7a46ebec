import NIOCore

extension Message {
    /// Writes this message's payload (not its frame) in SPEC.md §5's layout.
    func writePayload(into buffer: inout ByteBuffer) {
        switch self {
        case .hello(let hello):
            buffer.writeInteger(hello.minimumVersion)
            buffer.writeInteger(hello.maximumVersion)
            buffer.writeInteger(hello.maximumFramePayload)
            buffer.writeInteger(hello.maximumFileSize)
            if hello.login != .none {
                buffer.writeInteger(hello.login.rawValue)
            }
        case .list, .exit, .ok, .abort:
            break
        case .retrieve(let request):
            buffer.writeInteger(request.offset)
            buffer.writeFerryString(request.name)
            if let version = request.ifUnchanged {
                buffer.writeInteger(version.size)
                buffer.writeInteger(version.modified)
            }
        case .store(let request):
            buffer.writeInteger(request.size)
            buffer.writeInteger(request.offset)
            buffer.writeInteger(request.options.rawValue)
            buffer.writeFerryString(request.name)
            if let token = request.resumeToken {
                buffer.writeToken(token)
            }
        case .delete(let request):
            buffer.writeFerryString(request.name)
        case .auth(let request):
            buffer.writeFerryString(request.user, maximumLength: ProtocolLimits.maximumCredentialLength)
            buffer.writeFerryString(request.password, maximumLength: ProtocolLimits.maximumCredentialLength)
        case .rename(let request):
            buffer.writeInteger(request.options.rawValue)
            buffer.writeFerryString(request.from)
            buffer.writeFerryString(request.to)
        case .error(let reply):
            buffer.writeInteger(reply.code.rawValue)
            buffer.writeFerryString(reply.message, maximumLength: ProtocolLimits.maximumErrorMessageLength)
        case .listEntries(let entries):
            buffer.writeInteger(UInt32(clamping: entries.count))
            for entry in entries.prefix(Int(UInt32.max)) {
                buffer.writeInteger(entry.size)
                buffer.writeInteger(entry.modified)
                buffer.writeFerryString(entry.name)
            }
        case .listEnd(let end):
            buffer.writeInteger(end.count)
        case .fileInfo(let info):
            buffer.writeInteger(info.size)
            buffer.writeInteger(info.offset)
            buffer.writeInteger(info.modified)
        case .ready(let ready):
            buffer.writeInteger(ready.offset)
            if let token = ready.token {
                buffer.writeToken(token)
            }
        case .data(let chunk):
            buffer.writeImmutableBuffer(chunk.bytes)
        case .end(let end):
            buffer.writeInteger(end.length)
            buffer.writeInteger(end.crc32)
            if let fileCRC32 = end.fileCRC32 {
                buffer.writeInteger(fileCRC32)
            }
        }
    }
}

extension ByteBuffer {
    fileprivate mutating func writeToken(_ token: UploadToken) {
        self.writeInteger(token.high)
        self.writeInteger(token.low)
    }
}

extension ListEntry {
    /// The bytes this entry takes in a LIST_ENTRIES payload, so a sender can fill frames up to the peer's limit.
    public var encodedLength: Int {
        8 + 8 + 2 + min(self.name.utf8.count, Int(UInt16.max))
    }

    /// LIST_ENTRIES' own fields before the entries: the `u32` count.
    public static let batchHeaderLength = 4
}
