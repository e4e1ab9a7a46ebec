import ArgumentParser
import FerryClient

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload one or more files, over one connection.",
        discussion: """
            The server stores each file only after verifying its length and CRC-32; an existing file is kept unless \
            --overwrite is given.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The local files to upload.")
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
            let client = FerryClient(host: self.connection.host, port: self.connection.port)
            try await client.withConnection { connection in
                for path in self.paths {
                    let name = self.remoteName ?? Shell.lastComponent(of: path)
                    let progress = ProgressBar(label: name)
                    let bytes = try await connection.put(
                        path,
                        as: name,
                        overwrite: self.overwrite,
                        progress: progress.update
                    )
                    progress.finish()
                    print("stored \(path) → \(name) (\(Sizes.describe(bytes)), verified)")
                }
            }
        }
    }
}
