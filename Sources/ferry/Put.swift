import ArgumentParser
import FerryClient

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload a file.",
        discussion:
            "The server stores it only after verifying its length and CRC-32; an existing file is kept unless --overwrite is given."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The local file to upload.")
    var path: String

    @Option(name: .customLong("as"), help: "The name to store it under (default: the file's own name).")
    var remoteName: String?

    @Flag(help: "Replace a file of the same name on the server.")
    var overwrite = false

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = FerryClient(host: self.connection.host, port: self.connection.port)
            let name = self.remoteName ?? Shell.lastComponent(of: self.path)
            let progress = ProgressBar(label: name)
            let bytes = try await client.withConnection { connection in
                try await connection.put(self.path, as: name, overwrite: self.overwrite, progress: progress.update)
            }
            progress.finish()
            print("stored \(self.path) → \(name) (\(Sizes.describe(bytes)), verified)")
        }
    }
}
