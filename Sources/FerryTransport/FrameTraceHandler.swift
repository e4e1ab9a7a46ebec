import FerryProtocol
public import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Watches a connection's bytes both ways and reports each frame, as ``FrameTrace`` writes it, to `sink`; every
/// byte passes on unchanged. Placed on the application's side of TLS, it sees the frames, not the records.
///
/// A file sent with `sendfile` (a ``FileRegion``) never passes through memory: the tracer reads its bytes back from
/// the file, which only tracing costs.
public final class FrameTraceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = IOData
    public typealias OutboundOut = IOData

    /// Whether a line is about bytes this side sent (`true`) or received.
    public typealias Sink = @Sendable (_ sent: Bool, _ line: String) -> Void

    private var received: FrameTrace
    private var sent: FrameTrace
    private let sink: Sink

    /// - Parameter dataBytes: how many bytes of each DATA payload to show as hex.
    public init(dataBytes: Int = 0, sink: @escaping Sink) {
        self.received = FrameTrace(dataBytes: dataBytes)
        self.sent = FrameTrace(dataBytes: dataBytes)
        self.sink = sink
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        for line in self.received.consume(Self.unwrapInboundIn(data)) {
            self.sink(false, line)
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes: ByteBuffer
        switch Self.unwrapOutboundIn(data) {
        case .byteBuffer(let buffer):
            bytes = buffer
        case .fileRegion(let region):
            bytes = Self.read(region, allocator: context.channel.allocator)
        }
        for line in self.sent.consume(bytes) {
            self.sink(true, line)
        }
        context.write(data, promise: promise)
    }

    /// The bytes a file region will send. Blocking, but only while tracing, and only files in the page cache are
    /// sent this way.
    private static func read(_ region: FileRegion, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: region.readableBytes)
        _ = try? region.fileHandle.withUnsafeFileDescriptor { descriptor in
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: region.readableBytes) { target in
                var done = 0
                while done < region.readableBytes {
                    let count = pread(
                        descriptor,
                        target.baseAddress.map { $0 + done },
                        region.readableBytes - done,
                        off_t(region.readerIndex + done)
                    )
                    if count < 0, errno == EINTR { continue }
                    guard count > 0 else { break }
                    done += count
                }
                return done
            }
        }
        return buffer
    }
}

@available(*, unavailable)
extension FrameTraceHandler: Sendable {}
