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
    private let recording: Bool
    /// What happens to each connection, in order of arrival; connections beyond the list are relayed faithfully.
    private let faults: Mutex<[Fault]>
    private let moved = Mutex((toServer: 0, toClient: 0))

    /// A fault injected into one relayed connection.
    enum Fault: Sendable, Hashable {
        /// Relays faithfully.
        case none
        /// Relays this many bytes from the server to the client, then cuts the connection both ways.
        case cutToClient(after: Int)
        /// Relays this many bytes from the client to the server, then cuts the connection both ways.
        case cutToServer(after: Int)
        /// Relays this many bytes from the server, then relays nothing more either way, keeping the connection open.
        case stallToClient(after: Int)
        /// Relays this many bytes from the client, then relays nothing more from it, keeping the connection open.
        case stallToServer(after: Int)
        /// Relays this many bytes from the server, and cuts the connection both ways as soon as it sends more:
        /// the next message from the server is lost, whatever the client sent meanwhile arrived.
        case cutToClientBeforeMore(after: Int)
    }

    private init(listener: Int32, port: Int, faults: [Fault], recording: Bool) {
        self.listener = listener
        self.port = port
        self.faults = Mutex(faults)
        self.recording = recording
    }

    /// Queues `faults` for the next connections.
    func inject(_ faults: [Fault]) {
        self.faults.withLock { $0 += faults }
    }

    /// Bytes relayed so far in each direction, all connections together.
    var bytesMoved: (toServer: Int, toClient: Int) {
        self.moved.withLock { $0 }
    }

    /// Starts relaying connections on a free port to `127.0.0.1:port`, injecting `faults` into the first ones.
    static func start(forwardingTo target: Int, faults: [Fault] = [], recording: Bool = true) throws -> RecordingRelay {
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
        let relay = RecordingRelay(
            listener: listener,
            port: Int(UInt16(bigEndian: address.sin_port)),
            faults: faults,
            recording: recording
        )
        Thread.detachNewThread {
            while true {
                let client = accept(listener, nil, nil)
                guard client >= 0 else { return }  // stopped
                guard let server = try? LoopbackSocket.connect(port: target) else {
                    close(client)
                    continue
                }
                let fault = relay.faults.withLock { $0.isEmpty ? Fault.none : $0.removeFirst() }
                let finished = Mutex(0)
                for (from, to) in [(client, server), (server, client)] {
                    let toClient = to == client
                    let limit: Int? =
                        switch fault {
                        case .none: nil
                        case .cutToClient(let after), .stallToClient(let after), .cutToClientBeforeMore(let after):
                            toClient ? after : nil
                        case .cutToServer(let after), .stallToServer(let after): toClient ? nil : after
                        }
                    let stall: Bool =
                        switch fault {
                        case .stallToClient, .stallToServer: true
                        default: false
                        }
                    let waitForMore: Bool = if case .cutToClientBeforeMore = fault { true } else { false }
                    Thread.detachNewThread {
                        relay.copy(
                            from: from,
                            to: to,
                            limit: limit,
                            toClient: toClient,
                            stall: stall,
                            waitForMore: waitForMore
                        ) {
                            // A cut: both ways at once, as a broken path does.
                            shutdown(client, Int32(SHUT_RDWR))
                            shutdown(server, Int32(SHUT_RDWR))
                        }
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

    /// Copies until `from` ends, recording, then passes the end on; after `limit` bytes, cuts the connection (with
    /// `waitForMore`, once `from` sends anything more), or, with `stall`, stops relaying and waits for the other side
    /// to end it.
    private func copy(
        from: Int32,
        to: Int32,
        limit: Int? = nil,
        toClient: Bool = false,
        stall: Bool = false,
        waitForMore: Bool = false,
        cut: () -> Void = {}
    ) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var relayed = 0
        while true {
            var wanted = buffer.count
            if let limit {
                guard relayed < limit else {
                    if stall {
                        // Hold the connection open, relaying nothing, until the peer gives up.
                        while read(from, &buffer, buffer.count) > 0 {}
                        return
                    }
                    if waitForMore {
                        _ = read(from, &buffer, buffer.count)
                    }
                    cut()
                    return
                }
                wanted = min(wanted, limit - relayed)
            }
            let count = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, wanted) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            relayed += count
            self.moved.withLock { moved in
                if toClient { moved.toClient += count } else { moved.toServer += count }
            }
            if self.recording {
                self.recorded.withLock { $0 += buffer[..<count] }
            }
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
