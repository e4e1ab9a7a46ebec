public import NIOCore

extension SocketAddress {
    /// `127.0.0.1:8888` or `[::1]:8888`: how people write addresses, for log lines and messages.
    public var displayString: String {
        guard let ip = self.ipAddress else { return self.description }
        let host = ip.contains(":") ? "[\(ip)]" : ip
        return self.port.map { "\(host):\($0)" } ?? host
    }
}
