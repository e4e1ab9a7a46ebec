import NIOCore

/// Who a connection is from, for the limits and log-in delays kept per host: an IPv4 address, or an IPv6 address's
/// first 64 bits (one host's usual share: a host given a /64 has billions of addresses).
struct PeerAddress: Hashable, Sendable {
    private var bytes: [UInt8]

    init(_ address: SocketAddress?) {
        switch address {
        case .v4(let v4)?:
            self.bytes = withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6)?:
            let all = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            // An IPv4 peer on a dual-stack socket (::ffff:a.b.c.d) counts as its IPv4 address.
            let mapped = all.prefix(10).allSatisfy { $0 == 0 } && all[10] == 0xff && all[11] == 0xff
            self.bytes = mapped ? Array(all.suffix(4)) : Array(all.prefix(8))
        default:
            self.bytes = []
        }
    }
}
