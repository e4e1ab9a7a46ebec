import NIOCore

extension Message {
    /// Interprets a verified frame.
    ///
    /// Bytes after the fields a type defines are ignored, so a later version can append fields that older
    /// receivers skip (SPEC.md §5.1). Missing bytes are an error: a frame is never half-read.
    public init(decoding frame: Frame) throws(FerryProtocolError) {
        if frame.type == .data {
            // Taken as it arrived, perhaps in pieces: never copied whole (as `frame.payload` below would).
            self = .data(frame.dataChunk)
            return
        }
        var payload = frame.payload
        switch frame.type {
        case .hello:
            var hello = Hello(
                minimumVersion: try payload.read(UInt16.self, in: frame),
                maximumVersion: try payload.read(UInt16.self, in: frame),
                maximumFramePayload: try payload.read(UInt64.self, in: frame),
                maximumFileSize: try payload.read(UInt64.self, in: frame)
            )
            // Version 2's field, absent from version 1's HELLO (and from any HELLO that says `none`).
            if let login = payload.readInteger(as: UInt8.self) {
                hello.login = LoginPolicy(rawValue: login)
            }
            self = .hello(hello)
        case .list:
            self = .list
        case .retrieve:
            let offset = try payload.read(UInt64.self, in: frame)
            let name = try payload.readName(in: frame)
            var request = RetrieveRequest(name: name, offset: offset)
            // Version 3's condition, absent before it.
            if payload.readableBytes > 0 {
                request.ifUnchanged = FileVersion(
                    size: try payload.read(UInt64.self, in: frame),
                    modified: try payload.read(Int64.self, in: frame)
                )
            }
            self = .retrieve(request)
        case .store:
            let size = try payload.read(UInt64.self, in: frame)
            let offset = try payload.read(UInt64.self, in: frame)
            let options = StoreOptions(rawValue: try payload.read(UInt8.self, in: frame))
            let name = try payload.readName(in: frame)
            var request = StoreRequest(name: name, size: size, offset: offset, options: options)
            // Version 4's token, absent before it.
            if payload.readableBytes > 0 {
                request.resumeToken = try payload.readToken(in: frame)
            }
            self = .store(request)
        case .exit:
            self = .exit
        case .delete:
            self = .delete(DeleteRequest(name: try payload.readName(in: frame)))
        case .auth:
            let user = try payload.readStringBytes(in: frame)
            let password = try payload.readStringBytes(in: frame)
            guard user.count <= ProtocolLimits.maximumCredentialLength,
                password.count <= ProtocolLimits.maximumCredentialLength
            else {
                throw .malformed(
                    frame.type,
                    "a user name or password over \(ProtocolLimits.maximumCredentialLength) bytes"
                )
            }
            self = .auth(
                AuthRequest(
                    user: String(decoding: user, as: UTF8.self),
                    password: String(decoding: password, as: UTF8.self)
                )
            )
        case .rename:
            let options = RenameOptions(rawValue: try payload.read(UInt8.self, in: frame))
            let from = try payload.readName(in: frame)
            let to = try payload.readName(in: frame)
            self = .rename(RenameRequest(from: from, to: to, options: options))
        case .ok:
            self = .ok
        case .error:
            let code = ErrorCode(rawValue: try payload.read(UInt16.self, in: frame))
            let message = try payload.readStringBytes(in: frame)
            // The message is for people: a malformed sequence is shown repaired rather than refused.
            self = .error(ErrorReply(code: code, message: String(decoding: message, as: UTF8.self)))
        case .listEntries:
            self = .listEntries(try Self.decodeEntries(&payload, in: frame))
        case .listEnd:
            self = .listEnd(ListEnd(count: try payload.read(UInt64.self, in: frame)))
        case .fileInfo:
            let info = FileInfo(
                size: try payload.read(UInt64.self, in: frame),
                offset: try payload.read(UInt64.self, in: frame),
                modified: try payload.read(Int64.self, in: frame)
            )
            guard info.offset <= info.size else {
                throw .malformed(frame.type, "offset \(info.offset) is beyond the size \(info.size)")
            }
            self = .fileInfo(info)
        case .ready:
            var ready = Ready(offset: try payload.read(UInt64.self, in: frame))
            // Version 4's token, absent before it.
            if payload.readableBytes > 0 {
                ready.token = try payload.readToken(in: frame)
            }
            self = .ready(ready)
        case .end:
            var end = EndOfData(
                length: try payload.read(UInt64.self, in: frame),
                crc32: try payload.read(UInt32.self, in: frame)
            )
            // The whole-file CRC (a server's from version 3, a client's from version 4), absent before.
            if payload.readableBytes > 0 {
                end.fileCRC32 = try payload.read(UInt32.self, in: frame)
            }
            self = .end(end)
        case .abort:
            self = .abort
        default:
            throw .unknownFrameType(frame.type)
        }
    }

    private static func decodeEntries(
        _ payload: inout ByteBuffer,
        in frame: Frame
    ) throws(FerryProtocolError) -> [ListEntry] {
        let count = try payload.read(UInt32.self, in: frame)
        // The smallest entry is 18 bytes, so a count the payload cannot hold is refused before any allocation.
        let smallestEntry = 8 + 8 + 2
        guard Int(count) <= payload.readableBytes / smallestEntry else {
            throw .malformed(frame.type, "\(count) entries cannot fit in \(payload.readableBytes) bytes")
        }
        var entries: [ListEntry] = []
        entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            let size = try payload.read(UInt64.self, in: frame)
            let modified = try payload.read(Int64.self, in: frame)
            // Validated where it lies in the frame: no array per name.
            guard let length = payload.readInteger(as: UInt16.self),
                let bytes = payload.readSlice(length: Int(length))
            else {
                throw .malformed(frame.type, "ends inside a string field")
            }
            switch bytes.withUnsafeReadableBytes({ FileName.validate($0) }) {
            case .success(let name):
                entries.append(ListEntry(name: name, size: size, modified: modified))
            case .failure(let violation):
                throw .malformed(frame.type, "an entry's name breaks a naming rule: \(violation)")
            }
        }
        return entries
    }
}

extension ByteBuffer {
    fileprivate mutating func read<Integer: FixedWidthInteger>(
        _: Integer.Type,
        in frame: Frame
    ) throws(FerryProtocolError) -> Integer {
        guard let value = self.readInteger(as: Integer.self) else {
            throw .malformed(frame.type, "ends inside a \(Integer.bitWidth)-bit field")
        }
        return value
    }

    fileprivate mutating func readToken(in frame: Frame) throws(FerryProtocolError) -> UploadToken {
        UploadToken(high: try self.read(UInt64.self, in: frame), low: try self.read(UInt64.self, in: frame))
    }

    fileprivate mutating func readStringBytes(in frame: Frame) throws(FerryProtocolError) -> [UInt8] {
        guard let bytes = self.readFerryStringBytes() else {
            throw .malformed(frame.type, "ends inside a string field")
        }
        return bytes
    }

    /// A request's file name. A name that breaks a rule is a request error, not a malformed frame: the frame
    /// was intact and the connection stays usable.
    fileprivate mutating func readName(in frame: Frame) throws(FerryProtocolError) -> String {
        let bytes = try self.readStringBytes(in: frame)
        switch FileName.validate(bytes) {
        case .success(let name):
            return name
        case .failure(let violation):
            throw FerryProtocolError(.invalidName, "\(Self.quoted(bytes)) refused: \(violation)", frameType: frame.type)
        }
    }

    /// The name as a person can read it in an error message, with control bytes escaped and length capped.
    private static func quoted(_ bytes: [UInt8]) -> String {
        let shown = String(decoding: bytes.prefix(64), as: UTF8.self).escapingControlCharacters
        return "'" + shown + (bytes.count > 64 ? "…'" : "'")
    }
}
