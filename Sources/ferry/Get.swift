import ArgumentParser
import FerryClient
import FerryTransport

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: localized("Download one or more files (or the whole library, with --all), over one connection."),
        discussion: """
            Each file is written to a temporary file beside its target and renamed only once its length and CRC-32 \
            are verified. With several names or --all, --output names a folder.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The names of the files on the server.")
    var names: [String] = []

    @Flag(help: "Download every file in the library.")
    var all = false

    @Option(
        name: [.short, .long],
        help: "Where to write the file (default: the same name in the current folder); a folder with several names."
    )
    var output: String?

    @Flag(help: "Replace local files that exist.")
    var force = false

    @Option(help: "With --all, the most entries to accept from the server's listing.")
    var maxEntries = FerryConnection.defaultMaximumListingEntries

    @Flag(help: "Give each file the modification time it has on the server (as curl -R and scp -p do).")
    var preserveTime = false

    @Flag(help: "Start every download from the beginning, removing what was kept of an earlier, cut attempt.")
    var noResume = false

    @Option(help: "Days after which the part kept of a cut download is removed rather than resumed.")
    var partialMaxAge: Double = 7

    @Option(
        help: """
            How many times to try again when the connection is lost, times out or the server shuts down; each \
            attempt resumes where the last one was cut.
            """
    )
    var retries = 5

    @Option(help: "Seconds before the first retry; each further one waits twice as long, up to 30 s.")
    var retryWait: Double = 1

    func validate() throws {
        guard self.names.isEmpty == self.all else {
            throw ValidationError(self.all ? "--all takes no names" : "name at least one file to download, or --all")
        }
        guard self.retries >= 0, self.retries <= 1000 else { throw ValidationError("--retries must be 0 to 1000") }
        guard self.retryWait >= 0, self.retryWait <= 3600, self.partialMaxAge >= 0, self.partialMaxAge <= 36_500 else {
            throw ValidationError("--retry-wait must be 0 to 3600 s, --partial-max-age 0 to 36500 days")
        }
    }

    func destination(for name: String, of count: Int) -> String {
        guard let output = self.output else { return name }
        return count == 1 && !self.all ? output : output + "/" + name
    }

    func run() async throws {
        Interruption.removePartialDownloadsOnSignal()
        try await Failure.exitOnFailure {
            let client = try self.connection.client()
            if let output = self.output, self.all || self.names.count > 1 {
                try LocalFolder.make(output)
            }
            let policy = ResumePolicy(
                enabled: !self.noResume,
                maximumAge: .milliseconds(Int64(self.partialMaxAge * 86_400_000))
            )
            var names: [String]? = self.all ? nil : self.names
            var report: BatchReport?
            var pending: [Int] = []
            // A kept part that did not match is removed and its file tried once more, from the beginning.
            var restarted: Set<Int> = []
            var retry = Retry(limit: self.retries, firstWait: self.retryWait)
            while report == nil || !pending.isEmpty {
                do {
                    // With --all, the first attempt's LIST goes out with the greeting: a round trip less.
                    let listing = names == nil
                    try await client.withConnection(sendingEarly: listing ? .list : nil) { connection, listed in
                        let all: [String]
                        if let known = names {
                            all = known
                        } else {
                            all = try await connection.list(maximumEntries: self.maxEntries, alreadyRequested: listed)
                                .map(\.name)
                        }
                        names = all
                        if report == nil {
                            report = BatchReport(labels: all, subjects: all)
                            pending = Array(all.indices)
                        }
                        guard let report else { return }
                        let indices = pending
                        let downloads = indices.map {
                            FerryConnection.Download(
                                name: all[$0],
                                destination: self.destination(for: all[$0], of: all.count)
                            )
                        }
                        // Files done (or refused) leave the list, also when the connection then fails.
                        var done: Set<Int> = []
                        defer { pending.removeAll { done.contains($0) } }
                        try await connection.get(
                            downloads,
                            overwrite: self.force,
                            preservingTime: self.preserveTime,
                            resume: policy,
                            notice: { _, message in
                                report.interrupt()
                                Terminal.writeError("ferry: \(message.escapingControlCharacters)\n")
                            },
                            progress: {
                                report.progress(indices[$0], $1, $2)
                                retry.progress(all[indices[$0]], $1)
                            }
                        ) { position, result in
                            let index = indices[position]
                            if case .failure(let mismatch) = result, case .keptPartMismatch = mismatch,
                                !restarted.contains(index)
                            {
                                restarted.insert(index)
                                Failure.report(mismatch)
                                return
                            }
                            done.insert(index)
                            report.completed(index, result) { bytes in
                                localized(
                                    "received %@ → %@ (%@, verified)",
                                    all[index],
                                    downloads[position].destination,
                                    Sizes.describe(bytes)
                                )
                            }
                        }
                    }
                } catch let error as FerryClientError where Self.isWorthRetrying(error) && retry.remaining {
                    report?.interrupt()
                    try await retry.wait(after: error)
                }
            }
            try report?.finish(.downloaded, single: !self.all && self.names.count == 1)
        }
    }

    /// A lost connection, a timeout, a busy or stopping server: worth another attempt, which resumes. Refusals
    /// (no such file, permission denied, a checksum mismatch) are not.
    static func isWorthRetrying(_ error: FerryClientError) -> Bool {
        switch error {
        case .connectionLost, .unreachable:
            true
        case .refused(let reply):
            [.shuttingDown, .idleTimeout, .serverBusy, .uploadInProgress].contains(reply.code)
        default:
            false
        }
    }
}

/// The retries of a transfer command: how many are left, and the wait before the next, doubling up to 30 s, and back
/// to the first wait after an attempt that moved bytes. Each is announced on stderr with what cut the last attempt, and
/// where.
struct Retry {
    private let limit: Int
    private let first: Duration
    private var attempt = 1
    private var next: Duration
    /// The file in progress and its bytes moved, for the announcement; set by ``progress(_:_:)``.
    private var position: (name: String, bytes: UInt64)?
    private var progressed = false

    init(limit: Int, firstWait seconds: Double) {
        self.limit = limit
        self.first = .milliseconds(Int64(seconds * 1000))
        self.next = self.first
    }

    /// Whether another attempt may be made.
    var remaining: Bool {
        self.attempt <= self.limit
    }

    /// Notes that `bytes` of `name` have moved in this attempt.
    mutating func progress(_ name: String, _ bytes: UInt64) {
        if let position = self.position, position.name == name, bytes > position.bytes {
            self.progressed = true
        }
        self.position = (name, bytes)
    }

    /// Says why, where and how long, waits, and counts the attempt.
    mutating func wait(after error: FerryClientError) async throws {
        if self.progressed {
            self.next = self.first
        }
        let reason = error.description.escapingControlCharacters
        let line =
            if let position = self.position {
                localized(
                    "%@ at %@ of %@; retrying in %@ (attempt %@ of %@)",
                    reason,
                    Sizes.describe(position.bytes),
                    position.name.escapingControlCharacters,
                    Self.describe(self.next),
                    "\(self.attempt + 1)",
                    "\(self.limit + 1)"
                )
            } else {
                localized(
                    "%@; retrying in %@ (attempt %@ of %@)",
                    reason,
                    Self.describe(self.next),
                    "\(self.attempt + 1)",
                    "\(self.limit + 1)"
                )
            }
        Terminal.writeError("ferry: \(line)\n")
        try await Task.sleep(for: self.next)
        self.next = min(self.next * 2, .seconds(30))
        self.attempt += 1
        self.progressed = false
        self.position = nil
    }

    static func describe(_ wait: Duration) -> String {
        let milliseconds = wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(Double(milliseconds) / 1000) s"
    }
}
