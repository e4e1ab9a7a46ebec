import ArgumentParser
import FerryClient

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download one or more files, over one connection.",
        discussion: """
            Each file is written to a temporary file beside its target and renamed only once its length and CRC-32 \
            are verified. With several names, --output names a folder.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The names of the files on the server.")
    var names: [String]

    @Option(
        name: [.short, .long],
        help: "Where to write the file (default: the same name in the current folder); a folder with several names."
    )
    var output: String?

    @Flag(help: "Replace local files that exist.")
    var force = false

    func validate() throws {
        guard !self.names.isEmpty else { throw ValidationError("name at least one file to download") }
    }

    func destination(for name: String) -> String {
        guard let output = self.output else { return name }
        return self.names.count == 1 ? output : output + "/" + name
    }

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = FerryClient(host: self.connection.host, port: self.connection.port)
            try await client.withConnection { connection in
                for name in self.names {
                    let destination = self.destination(for: name)
                    let progress = ProgressBar(label: name)
                    let bytes = try await connection.get(
                        name,
                        to: destination,
                        overwrite: self.force,
                        progress: progress.update
                    )
                    progress.finish()
                    print("received \(name) → \(destination) (\(Sizes.describe(bytes)), verified)")
                }
            }
        }
    }
}
