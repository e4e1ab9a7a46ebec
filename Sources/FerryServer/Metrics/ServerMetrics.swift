import CoreMetrics
import FerryProtocol

/// What a server counts for its operator, through swift-metrics: whichever backend the process bootstrapped (ferryd's
/// `--metrics` serves Prometheus' text format); without one, nothing is recorded and nothing costs.
///
/// Every name starts with `ferry_`. Requests are counted by SPEC.md's operation and by result: `ok`, the ERROR code
/// that answered them, or `cut` (the connection ended first). The bytes are those of files and listings moved, not of
/// frames.
enum ServerMetrics {
    /// Connections being served now.
    static let connectionsOpen = Meter(label: "ferry_connections_open")
    /// Connections answered "server busy" (208) at once: over `--max-connections` (`busy`) or over
    /// `--max-connections-per-address` (`per_address`).
    static let refusedBusy = Counter(label: "ferry_connections_refused_total", dimensions: [("reason", "busy")])
    static let refusedPerAddress = Counter(
        label: "ferry_connections_refused_total",
        dimensions: [("reason", "per_address")]
    )
    static let bytesReceived = Counter(label: "ferry_received_bytes_total")
    static let bytesSent = Counter(label: "ferry_sent_bytes_total")
    /// Uploads verified and committed (OK sent).
    static let uploadsCommitted = Counter(label: "ferry_uploads_committed_total")
    /// Uploads whose data failed verification: END's CRC-32 (or the whole file's) differed (`checksum`, 104), or
    /// the length did (`length`, 105).
    static let checksumFailures = Counter(
        label: "ferry_upload_verification_failures_total",
        dimensions: [("kind", "checksum")]
    )
    static let lengthFailures = Counter(
        label: "ferry_upload_verification_failures_total",
        dimensions: [("kind", "length")]
    )
    /// AUTHs refused with a wrong user name or password (111).
    static let loginFailures = Counter(label: "ferry_login_failures_total")

    /// Creates the series that exist from the start (at 0), so that a scrape before any traffic shows them.
    static func register() {
        Self.connectionsOpen.set(0)
        for counter in [
            Self.refusedBusy, Self.refusedPerAddress, Self.bytesReceived, Self.bytesSent, Self.uploadsCommitted,
            Self.checksumFailures, Self.lengthFailures, Self.loginFailures,
        ] {
            counter.increment(by: 0)
        }
    }

    /// How a request ended, for its count.
    enum Outcome: Sendable {
        case ok
        /// Answered with this ERROR.
        case refused(ErrorCode)
        /// The connection ended (or broke the protocol) before the request was answered.
        case cut

        var label: String {
            switch self {
            case .ok: "ok"
            case .refused(let code): "\(code.rawValue)"
            case .cut: "cut"
            }
        }
    }

    /// Counts one request, its bytes and, for a transfer, its duration.
    static func record(operation: String, outcome: Outcome, bytes: UInt64, duration: Duration) {
        Counter(label: "ferry_requests_total", dimensions: [("operation", operation), ("result", outcome.label)])
            .increment()
        switch operation {
        case "STOR":
            if bytes > 0 { Self.bytesReceived.increment(by: Int64(clamping: bytes)) }
            Timer(label: "ferry_transfer_duration_seconds", dimensions: [("operation", operation)])
                .recordNanoseconds(Self.nanoseconds(duration))
            if case .ok = outcome { Self.uploadsCommitted.increment() }
        case "RETR":
            if bytes > 0 { Self.bytesSent.increment(by: Int64(clamping: bytes)) }
            Timer(label: "ferry_transfer_duration_seconds", dimensions: [("operation", operation)])
                .recordNanoseconds(Self.nanoseconds(duration))
        default:
            break
        }
        if case .refused(let code) = outcome {
            switch code {
            case .checksumMismatch: Self.checksumFailures.increment()
            case .lengthMismatch: Self.lengthFailures.increment()
            case .authenticationFailed: Self.loginFailures.increment()
            default: break
            }
        }
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds &* 1_000_000_000 &+ duration.components.attoseconds / 1_000_000_000
    }
}
