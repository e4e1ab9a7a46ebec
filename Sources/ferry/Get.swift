import ArgumentParser
import FerryClient

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download one or more files (or the whole library, with --all), over one connection.",
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

    func validate() throws {
        guard self.names.isEmpty == self.all else {
            throw ValidationError(self.all ? "--all takes no names" : "name at least one file to download, or --all")
        }
    }

    func destination(for name: String, of count: Int) -> String {
        guard let output = self.output else { return name }
        return count == 1 && !self.all ? output : output + "/" + name
    }

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = FerryClient(host: self.connection.host, port: self.connection.port)
            var downloads: [FerryConnection.Download] = []
            var failures: [FerryClientError] = []
            try await client.withConnection { connection in
                let names = self.all ? try await connection.list().map(\.name) : self.names
                downloads = names.map {
                    FerryConnection.Download(name: $0, destination: self.destination(for: $0, of: names.count))
                }
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
            if let only = failures.first, downloads.count == 1, !self.all {
                throw only
            } else if !failures.isEmpty {
                throw Failure.some(failures.count, of: downloads.count, "downloaded")
            }
        }
    }
}
