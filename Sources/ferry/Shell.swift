import ArgumentParser
import FerryClient
import FerryProtocol
import FerryTLS
import FerryTransport

/// The interactive shell: a menu, a prompt, and one command per line (also from a pipe).
///
/// Each command opens its own connection, so a person can think for as long as they like without the server's
/// idle timeout cutting them off, and a lost connection costs one command, not the session.
struct Shell: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shell",
        abstract: localized(
            "Interactive shell (the default): list, get NAME, put PATH, delete NAME, rename OLD NEW, help, exit."
        )
    )

    @OptionGroup var connection: ConnectionOptions

    static var menu: String {
        [
            "Commands:",
            "  list          show the files in the library",
            "  get NAME      download NAME into the current folder (add --force to replace a local file)",
            "  put PATH      upload the local file PATH under its own name (add --overwrite to replace)",
            "  delete NAME   delete NAME from the library",
            "  rename OLD NEW  give OLD the name NEW (add --overwrite to replace a file named NEW;",
            "                put a name with spaces in double quotes)",
            "  help          show this menu",
            "  exit          leave (Ctrl-D works too)",
        ].map { localized($0) }.joined(separator: "\n")
    }

    func run() async throws {
        let client = try self.connection.client()
        let input = LineReader()
        // Check the server is there before asking the person for anything.
        do {
            try await self.rememberNames(client)
        } catch FerryClientError.untrustedServer(.unknownServer(let server, let fingerprint, let reason))
            where input.interactive
        {
            // Trust on first use, SSH's way: the person compares the fingerprint with the one ferryd printed.
            print(
                localized(
                    "%@ is not a known server, and its certificate is not vouched for by an authority this machine trusts (%@).",
                    server.escapingControlCharacters,
                    String(reason.escapingControlCharacters.prefix(300))
                )
            )
            print(localized("Its certificate's SHA-256 fingerprint is"))
            print("  \(fingerprint)")
            guard
                let answer = input.next(
                    prompt: localized("Is that the fingerprint ferryd printed? Trust it from now on? [y/N] ")
                ),
                ["y", "yes", "是"].contains(answer.trimmingWhitespace().lowercased())
            else {
                print(localized("Not connected: nothing was sent."))
                throw ExitCode.failure
            }
            do {
                guard case .known(let known, _)? = client.tls else { throw ExitCode.failure }
                try known.remember(fingerprint, for: server)
                print(localized("Remembered in %@.", known.path))
                try await self.rememberNames(client)
            } catch {
                Failure.report(error)
                throw ExitCode.failure
            }
        } catch {
            Failure.report(error)
            throw ExitCode.failure
        }
        if input.interactive {
            print(localized("Connected to Ferry server %@", "\(self.connection.host):\(self.connection.port)"))
            print(Self.menu)
        }
        var failures = 0
        let prompt = localized("ferry> ")
        while let line = input.next(prompt: prompt) {
            let trimmed = line.trimmingWhitespace()
            guard !trimmed.isEmpty else { continue }
            let (command, argument) = trimmed.splitCommand()
            switch command.lowercased() {
            case "exit", "quit", "bye":
                try self.finish(failures: failures, interactive: input.interactive)
                return
            case "help", "?":
                print(Self.menu)
            case "list", "ls":
                failures += await self.attempt { try await self.list(client) }
            case "get":
                let (name, force) = argument.strippingFlag("--force")
                failures += await self.attempt { try await self.get(name, force: force, client) }
            case "put":
                let (path, overwrite) = argument.strippingFlag("--overwrite")
                failures += await self.attempt { try await self.put(path, overwrite: overwrite, client) }
            case "delete", "rm":
                failures += await self.attempt { try await self.delete(argument, client) }
            case "rename", "mv":
                let (names, overwrite) = argument.strippingFlag("--overwrite")
                failures += await self.attempt { try await self.rename(names, overwrite: overwrite, client) }
            default:
                print(localized("unknown command '%@'. Type 'help' for the list of commands.", command))
                failures += 1
            }
        }
        if input.interactive { print("") }
        try self.finish(failures: failures, interactive: input.interactive)
    }

    private func finish(failures: Int, interactive: Bool) throws {
        // In a pipe, the exit status tells a script whether every command worked.
        if failures > 0, !interactive {
            throw ExitCode.failure
        }
    }

    /// Runs one command; a failure is reported and counted, never fatal to the shell.
    private func attempt(_ body: () async throws -> Void) async -> Int {
        do {
            try await body()
            return 0
        } catch is ShellUsage {
            return 1
        } catch {
            Failure.report(error)
            return 1
        }
    }

    private func list(_ client: FerryClient) async throws {
        let entries = try await client.withConnection { try await $0.list() }
        ShellCompletion.remoteNames.withLock { $0 = entries.map(\.name) }
        print(ListingFormatter.table(entries), terminator: "")
    }

    /// Connects, which checks the server is there, and keeps its names for Tab (``ShellCompletion``): a listing
    /// refused (no permission to list, say) leaves none, and is no failure.
    private func rememberNames(_ client: FerryClient) async throws {
        let names = try await client.withConnection { connection in
            (try? await connection.list())?.map(\.name) ?? []
        }
        ShellCompletion.remoteNames.withLock { $0 = names }
    }

    private func get(_ name: String, force: Bool, _ client: FerryClient) async throws {
        guard !name.isEmpty else {
            print(localized("usage: get NAME"))
            throw ShellUsage()
        }
        let progress = ProgressBar(label: name)
        // Finished on failure too: the error must not land on the bar's line.
        defer { progress.finish() }
        let bytes = try await Self.retrying(name, progress, restartingAfter: .keptPartMismatch(name: name)) { retry in
            try await client.withConnection { connection in
                try await connection.get(
                    name,
                    to: name,
                    overwrite: force,
                    progress: { received, expected in
                        progress.update(received, expected)
                        retry.progress(name, received)
                    },
                    notice: { Self.notice($0, progress) }
                )
            }
        }
        progress.finish()
        print(localized("received %@ (%@, verified)", name, Sizes.describe(bytes)))
    }

    private func put(_ path: String, overwrite: Bool, _ client: FerryClient) async throws {
        guard !path.isEmpty else {
            print(localized("usage: put PATH"))
            throw ShellUsage()
        }
        let name = Self.lastComponent(of: path)
        let progress = ProgressBar(label: name)
        defer { progress.finish() }
        let bytes: UInt64
        do {
            bytes = try await Self.retrying(name, progress, restartingAfter: .keptUploadMismatch(name: name)) { retry in
                try await client.withConnection { connection in
                    try await connection.put(
                        path,
                        as: name,
                        overwrite: overwrite,
                        resume: ResumePolicy(keptUploadsFolder: KeptUpload.defaultFolder),
                        progress: { sent, size in
                            progress.update(sent, size)
                            retry.progress(name, sent)
                        },
                        notice: { Self.notice($0, progress) }
                    )
                }
            }
        } catch let error as FerryClientError where error.errorCode == .fileExists {
            progress.finish()
            throw FerryClientError.refused(
                ErrorReply(
                    code: .fileExists,
                    message: localized(
                        "'%@' already exists on the server; type 'put %@ --overwrite' to replace it",
                        name,
                        path
                    )
                )
            )
        }
        progress.finish()
        ShellCompletion.remoteNames.withLock { names in
            if !names.contains(name) { names.append(name) }
        }
        print(localized("stored %@ (%@, verified)", name, Sizes.describe(bytes)))
    }

    /// Runs a transfer, trying again as `ferry get` and `ferry put` do (5 times, from 1 s doubling) when the connection
    /// is lost, times out or the server is busy or stopping, each attempt resuming; and once more from the beginning
    /// after `mismatch` (a kept part that did not match, which the attempt dropped).
    private static func retrying(
        _ name: String,
        _ progress: ProgressBar,
        restartingAfter mismatch: FerryClientError,
        _ transfer: (inout Retry) async throws -> UInt64
    ) async throws -> UInt64 {
        var retry = Retry(limit: 5, firstWait: 1)
        var restarted = false
        while true {
            do {
                return try await transfer(&retry)
            } catch let error as FerryClientError where error == mismatch && !restarted {
                restarted = true
                progress.finish()
                Failure.report(error)
            } catch let error as FerryClientError where Get.isWorthRetrying(error) && retry.remaining {
                progress.finish()
                try await retry.wait(after: error)
            }
        }
    }

    /// A sentence about the transfer (resuming, starting again), printed on its own line, not over the bar.
    private static func notice(_ message: String, _ progress: ProgressBar) {
        progress.finish()
        Terminal.writeError("ferry: \(message.escapingControlCharacters)\n")
    }

    private func delete(_ name: String, _ client: FerryClient) async throws {
        guard !name.isEmpty else {
            print(localized("usage: delete NAME"))
            throw ShellUsage()
        }
        try await client.withConnection { try await $0.delete(name) }
        ShellCompletion.remoteNames.withLock { $0.removeAll { $0 == name } }
        print(localized("deleted %@", name))
    }

    private func rename(_ names: String, overwrite: Bool, _ client: FerryClient) async throws {
        guard let (from, to) = names.twoNames() else {
            print(localized("usage: rename OLD NEW (put a name with spaces in double quotes)"))
            throw ShellUsage()
        }
        try await client.withConnection { try await $0.rename(from, to: to, overwrite: overwrite) }
        ShellCompletion.remoteNames.withLock { names in
            names.removeAll { $0 == from || $0 == to }
            names.append(to)
        }
        print(localized("renamed %@ → %@", from, to))
    }

    static func lastComponent(of path: String) -> String {
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        return trimmed.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? trimmed
    }
}

/// A command typed without its argument: the usage line has been printed.
private struct ShellUsage: Error, CustomStringConvertible {
    var description: String { "missing argument" }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        String(self.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }

    /// `my file.txt --force` → ("my file.txt", true): the flag may only come last, as names may contain spaces.
    fileprivate func strippingFlag(_ flag: String) -> (String, Bool) {
        guard self == flag || self.hasSuffix(" " + flag) else { return (self, false) }
        return (String(self.dropLast(flag.count)).trimmingWhitespace(), true)
    }

    /// `old new`, `"my old file" new` → the two names: bare words, or double-quoted names that may hold spaces
    /// (`\"` stands for a quote inside one). `nil` unless there are exactly two.
    fileprivate func twoNames() -> (String, String)? {
        var names: [String] = []
        var rest = Substring(self)
        while true {
            rest = rest.drop(while: \.isWhitespace)
            guard let first = rest.first else { break }
            var name = ""
            if first == "\"" {
                rest = rest.dropFirst()
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if character == "\\", let escaped = rest.first {
                        name.append(escaped)
                        rest = rest.dropFirst()
                    } else if character == "\"" {
                        closed = true
                        break
                    } else {
                        name.append(character)
                    }
                }
                guard closed else { return nil }
            } else {
                name = String(rest.prefix { !$0.isWhitespace })
                rest = rest.dropFirst(name.count)
            }
            names.append(name)
        }
        return names.count == 2 ? (names[0], names[1]) : nil
    }

    /// `get my file.txt` → ("get", "my file.txt"): names may contain spaces, so the argument is the rest of the line.
    fileprivate func splitCommand() -> (String, String) {
        guard let space = self.firstIndex(where: \.isWhitespace) else { return (self, "") }
        return (String(self[..<space]), String(self[space...]).trimmingWhitespace())
    }
}
