import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// `GET /metrics` on its own port (`ferryd --metrics ADDRESS:PORT`): what the server counts (``ServerMetrics`` in
/// FerryServer), in Prometheus' text format. Any other request is answered 404, and every connection is closed after
/// its answer: a scraper's request each interval, nothing to hold open.
struct MetricsEndpoint: Service {
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let onListening: @Sendable (SocketAddress) -> Void

    /// `ADDRESS:PORT`, `[IPv6]:PORT` or `:PORT` (this machine only); `nil` if it is not one.
    static func parse(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65_535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }

    func run() async throws {
        let registry = self.registry
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(registry: registry))
                }
            }
            .bind(host: self.host, port: self.port)
            .get()
        if let address = channel.localAddress {
            self.onListening(address)
        }
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// Answers one HTTP request and closes.
private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private var request: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            break
        case .end:
            let found = self.request.map { $0.method == .GET && $0.uri.split(separator: "?").first == "/metrics" }
            let body: ByteBuffer
            var headers = HTTPHeaders()
            headers.add(name: "Connection", value: "close")
            let status: HTTPResponseStatus
            if found == true {
                status = .ok
                body = ByteBuffer(bytes: self.registry.emitToBuffer())
                headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
            } else {
                status = .notFound
                body = ByteBuffer(string: "Ferry's metrics are at /metrics\n")
                headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            }
            headers.add(name: "Content-Length", value: "\(body.readableBytes)")
            let version = self.request?.version ?? .http1_1
            context.write(
                Self.wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))),
                promise: nil
            )
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            // The connection closes once the answer is out: one request per connection.
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
                channel.close(promise: nil)
            }
            self.request = nil
        }
    }
}
