import FerryProtocol
import Foundation
import NIOCore

/// A download read through a plain blocking socket with a small receive buffer, on a thread of its own, at a pace
/// the test chooses: a client on a slow link, or one that stops reading.
enum SlowReader {
    /// What came of a download.
    struct Outcome {
        /// The frames that arrived after the server's HELLO, whole: FILE_INFO, DATA…, END, then OK for EXIT.
        var messages: [Message] = []
        /// The server closed the connection (or reset it).
        var closed = false
        var data: [UInt8] {
            self.messages.flatMap { message -> [UInt8] in
                guard case .data(let chunk) = message else { return [] }
                return Array(chunk.bytes.readableBytesView)
            }
        }
    }

    /// Requests `name` and reads `chunk` bytes every `interval`. After `stoppingAfter` bytes it stops reading for
    /// `pause` (after running `whilePaused`, on its own thread), then reads whatever is left. After END it says EXIT and goes on reading at the same pace. Ends at
    /// the answer to EXIT, at ERROR or at the connection's end; gives up after 20 s.
    static func download(
        _ name: String,
        port: Int,
        chunk: Int,
        every interval: Duration,
        stoppingAfter limit: Int = .max,
        pause: Duration = .zero,
        whilePaused: @escaping @Sendable () -> Void = {}
    ) async throws -> Outcome {
        let request =
            Handshake.magic + RawConnection.encode(.hello(FerryConnectionDefaults.hello))
            + RawConnection.encode(.retrieve(RetrieveRequest(name: name)))
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        try Self.run(
                            request,
                            port: port,
                            chunk: chunk,
                            interval: interval,
                            limit: limit,
                            pause: pause,
                            whilePaused: whilePaused
                        )
                    }
                )
            }
        }
    }

    private static func run(
        _ request: [UInt8],
        port: Int,
        chunk: Int,
        interval: Duration,
        limit: Int,
        pause: Duration,
        whilePaused: () -> Void
    ) throws -> Outcome {
        let socket = try LoopbackSocket.connect(port: port) { socket in
            // Small, so that the server's writes back up in its own socket buffer instead of ours.
            var receiveBuffer: Int32 = 16 << 10
            setsockopt(socket, SOL_SOCKET, SO_RCVBUF, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size))
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        defer { close(socket) }
        guard request.withUnsafeBytes({ send(socket, $0.baseAddress, $0.count, 0) }) == request.count else {
            throw TestFailure("send: \(errno)")
        }

        var outcome = Outcome()
        var parser = FrameParser(maximumPayloadLength: 1 << 20)
        var magic = Handshake.magic.count
        var received = 0
        var paused = false
        var buffer = [UInt8](repeating: 0, count: chunk)
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(20) {
            if received >= limit, !paused {
                paused = true
                whilePaused()
                Thread.sleep(for: pause)
            }
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, chunk, 0) }
            guard count > 0 else {
                outcome.closed = count == 0 || errno == ECONNRESET
                return outcome
            }
            received += count
            var bytes = ByteBuffer(bytes: buffer[0..<count])
            let skipped = min(magic, bytes.readableBytes)
            bytes.moveReaderIndex(forwardBy: skipped)
            magic -= skipped
            parser.append(bytes: bytes)
            while let frame = try parser.nextFrame() {
                let message = try Message(decoding: frame)
                if case .hello = message { continue }
                outcome.messages.append(message)
                switch message {
                case .end:
                    let exit = RawConnection.encode(.exit)
                    guard exit.withUnsafeBytes({ send(socket, $0.baseAddress, $0.count, 0) }) == exit.count else {
                        throw TestFailure("send: \(errno)")
                    }
                case .ok, .error: return outcome
                default: break
                }
            }
            if !paused || received < limit {
                Thread.sleep(for: interval)
            }
        }
        return outcome
    }
}
