import FerryProtocol
import NIOCore
import Testing

@Suite("Handshake")
struct HandshakeTests {
    private func outcome(of bytes: [UInt8], pieces: Int = 1) -> (MagicMatcher.Outcome, consumed: Int) {
        var matcher = MagicMatcher()
        var consumed = 0
        var last = MagicMatcher.Outcome.needMoreBytes
        for start in stride(from: 0, to: bytes.count, by: pieces) {
            var buffer = ByteBuffer(bytes: bytes[start..<min(start + pieces, bytes.count)])
            let before = buffer.readableBytes
            last = matcher.consume(&buffer)
            consumed += before - buffer.readableBytes
            if last != .needMoreBytes { break }
        }
        return (last, consumed)
    }

    @Test(arguments: ["LIST", "RETR x", "GET / HTTP/1.1\r\n\r\n", "SSH-2.0-OpenSSH\r\n", "\u{16}\u{3}\u{1}"])
    func foreignProtocolsAreRecognisedAtTheFirstByte(_ greeting: String) {
        let (outcome, consumed) = self.outcome(of: Array(greeting.utf8))
        #expect(outcome == .mismatch)
        #expect(consumed == 1)
    }

    @Test func aMismatchLateInTheMagicIsStillCaught() {
        var bytes = Handshake.magic
        bytes[6] = 0x0A  // LF instead of CR: a line-ending translation.
        let (outcome, consumed) = self.outcome(of: bytes, pieces: 1)
        #expect(outcome == .mismatch)
        #expect(consumed == 7)
    }

    @Test func magicSplitAnywhereMatchesAndLeavesTheRest() {
        for piece in 1...9 {
            let (outcome, consumed) = self.outcome(of: Handshake.magic + [0xAA, 0xBB], pieces: piece)
            #expect(outcome == .matched)
            #expect(consumed == 8)
        }
    }

    @Test func versionNegotiationPicksTheNewestCommonVersion() throws {
        func hello(_ range: ClosedRange<UInt16>) -> Hello {
            Hello(
                minimumVersion: range.lowerBound,
                maximumVersion: range.upperBound,
                maximumFramePayload: 1 << 16,
                maximumFileSize: 0
            )
        }
        #expect(try Handshake.negotiateVersion(local: hello(1...1), remote: hello(1...1)) == 1)
        // A newer client meets an older server, and the other way round.
        #expect(try Handshake.negotiateVersion(local: hello(1...3), remote: hello(1...1)) == 1)
        #expect(try Handshake.negotiateVersion(local: hello(1...1), remote: hello(1...3)) == 1)
        #expect(try Handshake.negotiateVersion(local: hello(2...4), remote: hello(3...9)) == 4)
        #expect(throws: FerryProtocolError.self) {
            try Handshake.negotiateVersion(local: hello(1...1), remote: hello(2...3))
        }
        do {
            _ = try Handshake.negotiateVersion(local: hello(1...1), remote: hello(2...3))
        } catch {
            #expect(error.kind == .versionMismatch)
            #expect(error.errorCode == .versionMismatch)
        }
        do {
            _ = try Handshake.negotiateVersion(
                local: hello(1...1),
                remote: Hello(minimumVersion: 3, maximumVersion: 1, maximumFramePayload: 1 << 16, maximumFileSize: 0)
            )
        } catch {
            #expect(error.kind == .badHandshake)
        }
    }

    @Test func aFrameLimitBelowTheMinimumIsABadHandshake() {
        let small = Hello(
            minimumVersion: 1,
            maximumVersion: 1,
            maximumFramePayload: ProtocolLimits.minimumFramePayload - 1,
            maximumFileSize: 0
        )
        #expect(
            throws: FerryProtocolError(
                .badHandshake,
                "HELLO announces a 65535-byte frame limit; at least 65536 is required"
            )
        ) {
            try Handshake.validate(small)
        }
        let enough = Hello(
            minimumVersion: 1,
            maximumVersion: 1,
            maximumFramePayload: ProtocolLimits.minimumFramePayload,
            maximumFileSize: 0
        )
        #expect(throws: Never.self) { try Handshake.validate(enough) }
    }

    @Test func theTextReplyIsOneReadableLine() {
        let reply = Handshake.notFerryReply
        #expect(reply.hasSuffix("\r\n"))
        #expect(reply.utf8.allSatisfy { $0 == 0x0D || $0 == 0x0A || (0x20..<0x7F).contains($0) })
        #expect(reply.hasPrefix("FERRY \(ErrorCode.notFerry.rawValue) "))
    }
}
