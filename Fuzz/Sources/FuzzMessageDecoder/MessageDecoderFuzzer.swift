// Harness 2: every message payload decoder, fed an arbitrary payload for an arbitrary type.
//
// Invariants: decoding never traps and never allocates from a count it has not checked against the payload; a
// payload that decodes re-encodes to a payload that decodes to the same message (bytes may differ only by the
// trailing bytes a receiver ignores).
import FerryProtocol
import FuzzSupport
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMessageDecoder(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    // Mostly the defined types, so the decoders get the attention; sometimes any byte.
    let selector = input.byte()
    let type =
        selector & 0x80 == 0
        ? FrameType.known[Int(selector) % FrameType.known.count]
        : FrameType(rawValue: input.byte())
    let payload = ByteBuffer(bytes: input.rest())
    guard let message = try? Message(decoding: Frame(type: type, payload: payload)) else {
        return 0
    }
    precondition(message.frameType == type, "decoded into another type")
    var encoded = ByteBuffer()
    FrameSerializer.serialize(message, into: &encoded)
    var parser = FrameParser(maximumPayloadLength: Int(UInt32.max))
    parser.append(bytes: encoded)
    guard let frame = try? parser.nextFrame(), let again = try? Message(decoding: frame) else {
        preconditionFailure("a decoded message did not survive re-encoding")
    }
    if case .error(let reply) = message, reply.message.utf8.count > ProtocolLimits.maximumErrorMessageLength {
        // Senders cut long messages; the code must survive.
        guard case .error(let cut) = again, cut.code == reply.code else { preconditionFailure("ERROR changed") }
    } else {
        precondition(again == message, "re-encoding changed the message")
    }
    return 0
}
