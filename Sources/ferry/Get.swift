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
            let downloads = self.names.map {
                FerryConnection.Download(name: $0, destination: self.destination(for: $0))
            }
            var failures: [FerryClientError] = []
            try await client.withConnection { connection in
                var bars: [Int: ProgressBar] = [:]
                try await connection.get(
                    downloads,
                    overwrite: self.force,
                    progress: { index, received, expected in
                        let bar = bars[index] ?? ProgressBar(label: downloads[index].name)
                        bars[index] = bar
                        bar.update(received, expected)
                    },
                    completed: { index, result in
                        bars.removeValue(forKey: index)?.finish()
                        let download = downloads[index]
                        switch result {
                        case .success(let bytes):
                            print(
                                "received \(download.name) → \(download.destination) (\(Sizes.describe(bytes)), verified)"
                            )
                        case .failure(let error):
                            failures.append(error)
                            if downloads.count > 1 { Failure.report(error, about: download.name) }
                        }
                    }
                )
            }
            if let only = failures.first, downloads.count == 1 {
                throw only
            } else if !failures.isEmpty {
                throw Failure.some(failures.count, of: downloads.count, "downloaded")
            }
        }
    }
}
