#if canImport(Glibc)
import Glibc
#endif

/// A plain blocking TCP socket to a port on 127.0.0.1, for tests that must read and write at a pace of their own
/// (on a thread of their own), below what NIO would do for them.
enum LoopbackSocket {
    /// A connected socket, for the caller to close. `configure` runs before connecting, where options such as the
    /// receive buffer's size must be set to take effect.
    static func connect(port: Int, configure: (Int32) -> Void = { _ in }) throws -> Int32 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw TestFailure("socket: \(errno)") }
        configure(socket)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            let failure = errno
            close(socket)
            throw TestFailure("connect: \(failure)")
        }
        return socket
    }
}
