import ArgumentParser
import FerryClient
import FerryProtocol
import FerryTransport

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: localized("Upload one or more files (or the files of a folder), over one connection."),
        discussion: """
            The server stores each file only after verifying its length and CRC-32; an existing file is kept unless \
            --overwrite is given.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The local files to upload; a folder stands for the regular files directly inside it.")
    var paths: [String]

    @Option(name: .customLong("as"), help: "The name to store the file under (default: its own name); one file only.")
    var remoteName: String?

    @Flag(help: "Replace files of the same name on the server.")
    var overwrite = false

    @Flag(help: "Start every upload from the beginning, emptying what the server kept of an earlier, cut attempt.")
    var noResume = false

    @Option(
        help: """
            How many times to try again when the connection is lost, times out or the server shuts down; each \
            attempt resumes where the server's copy was cut.
            """
    )
    var retries = 5

    @Option(help: "Seconds before the first retry; each further one waits twice as long, up to 30 s.")
    var retryWait: Double = 1

    func validate() throws {
        guard !self.paths.isEmpty else { throw ValidationError("name at least one file to upload") }
        guard self.remoteName == nil || self.paths.count == 1 else {
            throw ValidationError("--as names one file; it cannot be used with several")
        }
        guard self.retries >= 0, self.retries <= 1000 else { throw ValidationError("--retries must be 0 to 1000") }
        guard self.retryWait >= 0, self.retryWait <= 3600 else {
            throw ValidationError("--retry-wait must be 0 to 3600 s")
        }
    }

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = try self.connection.client()
            let sources = try LocalFolder.expand(self.paths)
            if self.remoteName != nil, sources != self.paths {
                throw ValidationError("--as names one file, not a folder")
            }
            let uploads = sources.map {
                FerryConnection.Upload(source: $0, name: self.remoteName ?? Shell.lastComponent(of: $0))
            }
            let report = BatchReport(labels: uploads.map(\.name), subjects: uploads.map(\.source))
            let policy = ResumePolicy(enabled: !self.noResume, keptUploadsFolder: KeptUpload.defaultFolder)
            var pending = Array(uploads.indices)
            // An upload whose kept part did not match is tried once more, from the beginning.
            var restarted: Set<Int> = []
            var retry = Retry(limit: self.retries, firstWait: self.retryWait)
            while !pending.isEmpty {
                // An upload its earlier connection is still sending, as far as the server knows (112).
                var busy: FerryClientError?
                do {
                    try await client.withConnection { connection in
                        let indices = pending
                        // Files done (or refused) leave the list, also when the connection then fails.
                        var done: Set<Int> = []
                        defer { pending.removeAll { done.contains($0) } }
                        try await connection.put(
                            indices.map { uploads[$0] },
                            overwrite: self.overwrite,
                            resume: policy,
                            notice: { _, message in
                                report.interrupt()
                                Terminal.writeError("ferry: \(message.escapingControlCharacters)\n")
                            },
                            progress: {
                                report.progress(indices[$0], $1, $2)
                                retry.progress(uploads[indices[$0]].name, $1)
                            }
                        ) { position, result in
                            let index = indices[position]
                            if case .failure(let mismatch) = result, case .keptUploadMismatch = mismatch,
                                !restarted.contains(index)
                            {
                                restarted.insert(index)
                                Failure.report(mismatch)
                                return
                            }
                            if case .failure(let refusal) = result, refusal.errorCode == .uploadInProgress,
                                retry.remaining
                            {
                                busy = refusal
                                return
                            }
                            done.insert(index)
                            report.completed(index, result.mapError { Self.hinting($0, uploads[index].name) }) {
                                bytes in
                                localized(
                                    "stored %@ → %@ (%@, verified)",
                                    uploads[index].source,
                                    uploads[index].name,
                                    Sizes.describe(bytes)
                                )
                            }
                        }
                    }
                    if let busy {
                        report.interrupt()
                        try await retry.wait(after: busy)
                    }
                } catch let error as FerryClientError where Get.isWorthRetrying(error) && retry.remaining {
                    report.interrupt()
                    try await retry.wait(after: error)
                }
            }
            try report.finish(.stored, single: uploads.count == 1 && uploads[0].source == self.paths.first)
        }
    }

    /// A name taken on the server is refused with a sentence that names this command's flag.
    private static func hinting(_ error: FerryClientError, _ name: String) -> FerryClientError {
        guard error.errorCode == .fileExists else { return error }
        return .refused(
            ErrorReply(
                code: .fileExists,
                message: localized("'%@' already exists on the server (add --overwrite to replace it)", name)
            )
        )
    }
}
