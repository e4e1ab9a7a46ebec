import ArgumentParser
import FerryClient
import FerryProtocol

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Upload one or more files (or the files of a folder), over one connection.",
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

    func validate() throws {
        guard !self.paths.isEmpty else { throw ValidationError("name at least one file to upload") }
        guard self.remoteName == nil || self.paths.count == 1 else {
            throw ValidationError("--as names one file; it cannot be used with several")
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
            try await client.withConnection { connection in
                try await connection.put(uploads, overwrite: self.overwrite, progress: report.progress) {
                    index,
                    result in
                    report.completed(index, result.mapError { Self.hinting($0, uploads[index].name) }) { bytes in
                        "stored \(uploads[index].source) → \(uploads[index].name) (\(Sizes.describe(bytes)), verified)"
                    }
                }
            }
            try report.finish("stored", single: uploads.count == 1 && uploads[0].source == self.paths.first)
        }
    }

    /// A name taken on the server is refused with a sentence that names this command's flag.
    private static func hinting(_ error: FerryClientError, _ name: String) -> FerryClientError {
        guard error.errorCode == .fileExists else { return error }
        return .refused(
            ErrorReply(
                code: .fileExists,
                message: "'\(name)' already exists on the server (add --overwrite to replace it)"
            )
        )
    }
}
