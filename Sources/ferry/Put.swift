import ArgumentParser
import FerryClient

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
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
            let client = FerryClient(host: self.connection.host, port: self.connection.port)
            let sources = try LocalFolder.expand(self.paths)
            if self.remoteName != nil, sources != self.paths {
                throw ValidationError("--as names one file, not a folder")
            }
            let uploads = sources.map {
                FerryConnection.Upload(source: $0, name: self.remoteName ?? Shell.lastComponent(of: $0))
            }
            var failures: [FerryClientError] = []
            try await client.withConnection { connection in
                var bars: [Int: ProgressBar] = [:]
                try await connection.put(
                    uploads,
                    overwrite: self.overwrite,
                    progress: { index, sent, size in
                        let bar = bars[index] ?? ProgressBar(label: uploads[index].name)
                        bars[index] = bar
                        bar.update(sent, size)
                    },
                    completed: { index, result in
                        bars.removeValue(forKey: index)?.finish()
                        let upload = uploads[index]
                        switch result {
                        case .success(let bytes):
                            print("stored \(upload.source) → \(upload.name) (\(Sizes.describe(bytes)), verified)")
                        case .failure(let error):
                            failures.append(error)
                            if uploads.count > 1 { Failure.report(error, about: upload.source) }
                        }
                    }
                )
            }
            if let only = failures.first, uploads.count == 1, uploads[0].source == self.paths.first {
                throw only
            } else if !failures.isEmpty {
                throw Failure.some(failures.count, of: uploads.count, "stored")
            }
        }
    }
}
