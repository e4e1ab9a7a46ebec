import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A loopback relay that forwards every connection to a server and records every byte that crosses it, both ways:
/// what anyone on the path would see. Tests look for secrets in ``captured``.
///
/// Plain blocking sockets, a thread per direction: a test relays a handful of connections.
final class RecordingRelay: Sendable {
    let port: Int
    private let listener: Int32
    private let recorded = Mutex<[UInt8]>([])

    private init(listener: Int32, port: Int) {
        self.listener = listener
        self.port = port
    }

    /// Starts relaying connections on a free port to `127.0.0.1:port`.
    static func start(forwardingTo target: Int) throws -> RecordingRelay {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw TestFailure("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 16) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard bound else {
            close(listener)
            throw TestFailure("cannot listen: \(errno)")
        }
        let relay = RecordingRelay(listener: listener, port: Int(UInt16(bigEndian: address.sin_port)))
        Thread.detachNewThread {
            while true {
                let client = accept(listener, nil, nil)
                guard client >= 0 else { return }  // stopped
                guard let server = try? LoopbackSocket.connect(port: target) else {
                    close(client)
                    continue
                }
                let finished = Mutex(0)
                for (from, to) in [(client, server), (server, client)] {
                    Thread.detachNewThread {
                        relay.copy(from: from, to: to)
                        // Both directions done: both sockets can go.
                        if finished.withLock({
                            $0 += 1
                            return $0
                        }) == 2 {
                            close(client)
                            close(server)
                        }
                    }
                }
            }
        }
        return relay
    }

    /// Copies until `from` ends, recording, then passes the end on.
    private func copy(from: Int32, to: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            self.recorded.withLock { $0 += buffer[..<count] }
            var sent = 0
            while sent < count {
                let written = buffer.withUnsafeBytes { write(to, $0.baseAddress! + sent, count - sent) }
                guard written > 0 else {
                    shutdown(from, Int32(SHUT_RD))
                    shutdown(to, Int32(SHUT_WR))
                    return
                }
                sent += written
            }
        }
        shutdown(to, Int32(SHUT_WR))
    }

    /// Every byte relayed so far, in both directions.
    var captured: [UInt8] {
        self.recorded.withLock { $0 }
    }

    /// Stops accepting; relayed connections end when their peers close them.
    func stop() {
        shutdown(self.listener, Int32(SHUT_RDWR))
        close(self.listener)
    }
}
