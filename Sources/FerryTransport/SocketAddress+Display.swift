public import NIOCore

extension SocketAddress {
    /// `127.0.0.1:8888` or `[::1]:8888`: how people write addresses, for log lines and messages.
    public var displayString: String {
        guard let ip = self.ipAddress else { return self.description }
        let host = ip.contains(":") ? "[\(ip)]" : ip
        return self.port.map { "\(host):\($0)" } ?? host
    }

    /// Whether this is an address of this machine's loopback interface (127.0.0.0/8, ::1, or an IPv4-mapped
    /// 127 address): traffic to it never leaves the machine.
    public var isLoopback: Bool {
        switch self {
        case .v4(let v4):
            return UInt32(bigEndian: v4.address.sin_addr.s_addr) >> 24 == 127
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            let loopback = bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1
            let mapped = bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
            return loopback || (mapped && bytes[12] == 127)
        default:
            return false
        }
    }
}
