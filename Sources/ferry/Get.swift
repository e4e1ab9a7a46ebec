import ArgumentParser
import FerryClient

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a file.",
        discussion:
            "The file is written to a temporary file beside the target and renamed only once its length and CRC-32 are verified."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The name of the file on the server.")
    var name: String

    @Option(name: [.short, .long], help: "Where to write it (default: the same name in the current folder).")
    var output: String?

    @Flag(help: "Replace the local file if it exists.")
    var force = false

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = FerryClient(host: self.connection.host, port: self.connection.port)
            let destination = self.output ?? self.name
            let progress = ProgressBar(label: self.name)
            let bytes = try await client.withConnection { connection in
                try await connection.get(self.name, to: destination, overwrite: self.force, progress: progress.update)
            }
            progress.finish()
            print("received \(self.name) → \(destination) (\(Sizes.describe(bytes)), verified)")
        }
    }
}
