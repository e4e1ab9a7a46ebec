import Foundation

/// The package's own executables, as built next to the test bundle.
enum Binaries {
    static func url(_ name: String) throws -> URL {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
            Bundle.main.bundleURL,
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/debug"),
        ]
        for directory in candidates {
            let url = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) {
                return url
            }
        }
        throw TestFailure("cannot find the \(name) executable near \(candidates.map(\.path))")
    }

    /// Starts `name` with `arguments`; `as: .ordinaryUser` runs it as `nobody` (see ``User``), and `limits` are
    /// `prlimit` options it runs under (`--nofile=64`, say).
    static func launch(
        _ name: String,
        _ arguments: [String],
        as user: User = .current,
        limits: [String] = [],
        environment: [String: String] = [:],
        currentDirectory: URL? = nil,
        underTerminal: Bool = false,
        stdin: Pipe? = nil,
        stdout: Pipe? = nil,
        stderr: Pipe? = nil
    ) throws -> Process {
        let process = Process()
        var command = [try self.url(name).path] + arguments
        if !limits.isEmpty {
            command = ["/usr/bin/prlimit"] + limits + ["--"] + command
        }
        if underTerminal {
            // script(1) gives the command a pseudo-terminal and passes its own input on to it.
            let quoted = command.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
            command = [Self.terminalProvider, "-qec", quoted.joined(separator: " "), "/dev/null"]
        }
        if user == .ordinaryUser, let switcher = User.switcher {
            command = [switcher.path] + User.switchArguments + command
        }
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        // ferry records the uploads a server keeps for it under XDG_STATE_HOME: a folder of the tests' own, one per
        // user, unless a test names one.
        var environment = environment
        if environment["XDG_STATE_HOME"] == nil {
            environment["XDG_STATE_HOME"] =
                (user == .ordinaryUser ? Self.ordinaryUserState : Self.currentUserState).path
        }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.currentDirectoryURL = currentDirectory
        process.standardInput = stdin ?? FileHandle.nullDevice
        process.standardOutput = stdout ?? FileHandle.nullDevice
        process.standardError = stderr ?? FileHandle.nullDevice
        try process.run()
        return process
    }

    private static let currentUserState = Scratch.makeDirectory("state")
    private static let ordinaryUserState: URL = {
        let folder = Scratch.makeDirectory("state")
        try? User.handOver(folder)
        return folder
    }()

    /// util-linux's `script`, which runs a command on a pseudo-terminal (for the shell's interactive prompts).
    static let terminalProvider = "/usr/bin/script"

    static var canProvideTerminal: Bool {
        FileManager.default.isExecutableFile(atPath: Self.terminalProvider)
    }

    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Everything until the end of `handle`, read on a thread of its own: a blocking read on one of the few threads
    /// of Swift's concurrency pool stalls the in-process test servers that share them, until idle timeouts of
    /// other tests fire (two reads per command took both threads of this 2-core machine for the command's life).
    private static func readToEnd(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: handle.readDataToEndOfFile()) }
        }
    }

    /// Runs any program (tshark, systemd-analyze, python3) to completion, as ``run(_:_:as:environment:input:currentDirectory:underTerminal:timeout:)``
    /// runs the package's: its output read on threads of their own, and its end awaited without holding one of the
    /// cooperative threads the in-process servers and other tests share.
    static func run(
        program path: String,
        _ arguments: [String],
        timeout: Duration = .seconds(60)
    ) async throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        return try await Self.finish(process, stdout: stdout, stderr: stderr, timeout: timeout, "\(path) \(arguments)")
    }

    /// Reads a running process's output on threads of its own and awaits its end, polling (killing it after `timeout`).
    private static func finish(
        _ process: Process,
        stdout: Pipe,
        stderr: Pipe,
        timeout: Duration,
        _ what: String
    ) async throws -> Outcome {
        async let out = Self.readToEnd(stdout.fileHandleForReading)
        async let err = Self.readToEnd(stderr.fileHandleForReading)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                process.terminate()
                throw TestFailure("\(what) did not finish within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return Outcome(
            status: process.terminationStatus,
            stdout: String(decoding: await out, as: UTF8.self),
            stderr: String(decoding: await err, as: UTF8.self)
        )
    }

    /// Runs a command to completion (killing it after `timeout`), feeding it `input`.
    static func run(
        _ name: String,
        _ arguments: [String],
        as user: User = .current,
        environment: [String: String] = [:],
        input: String? = nil,
        currentDirectory: URL? = nil,
        underTerminal: Bool = false,
        timeout: Duration = .seconds(60)
    ) async throws -> Outcome {
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        let process = try self.launch(
            name,
            arguments,
            as: user,
            environment: environment,
            currentDirectory: currentDirectory,
            underTerminal: underTerminal,
            stdin: stdin,
            stdout: stdout,
            stderr: stderr
        )
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
        }
        try stdin.fileHandleForWriting.close()
        return try await Self.finish(process, stdout: stdout, stderr: stderr, timeout: timeout, "\(name) \(arguments)")
    }
}

/// Who runs a binary in a test.
///
/// People run ferryd and ferry as ordinary users; the tests and CI run as root, which once hid a defect that stopped
/// both from working for anyone else (a socket option only root may set). Tests that say `.ordinaryUser` run the
/// binary as `nobody` through `setpriv` when the tests run as root, and as the current (already unprivileged) user
/// otherwise. The folders such a binary uses must be handed to that user first (``handOver(_:)``).
enum User: Equatable {
    case current
    case ordinaryUser

    /// `nobody` and `nogroup` on Debian.
    static let ordinaryID: UInt32 = 65534

    /// `setpriv`, when the tests run as root and it is installed (util-linux).
    static let switcher: URL? = {
        guard getuid() == 0 else { return nil }
        return ["/usr/bin/setpriv", "/bin/setpriv"].map { URL(fileURLWithPath: $0) }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }()

    static let switchArguments = ["--reuid=\(ordinaryID)", "--regid=\(ordinaryID)", "--clear-groups", "--"]

    /// Whether `.ordinaryUser` really runs without root's privileges here.
    static var canRunUnprivileged: Bool {
        getuid() != 0 || Self.switcher != nil
    }

    /// Makes `folder` and everything in it the ordinary user's, and the folders above it passable, so a binary run
    /// `.ordinaryUser` can use it. Nothing to do when the tests do not run as root.
    static func handOver(_ folder: URL) throws {
        guard getuid() == 0 else { return }
        var parent = folder.deletingLastPathComponent()
        while parent.path != "/" {
            var info = stat()
            if stat(parent.path, &info) == 0, info.st_mode & 0o001 == 0 {
                chmod(parent.path, info.st_mode & 0o7777 | 0o111)
            }
            parent = parent.deletingLastPathComponent()
        }
        let paths =
            [folder.path]
            + (FileManager.default.subpaths(atPath: folder.path) ?? []).map {
                folder.appendingPathComponent($0).path
            }
        for path in paths where lchown(path, Self.ordinaryID, Self.ordinaryID) != 0 {
            throw TestFailure("cannot hand \(path) over to uid \(Self.ordinaryID): \(String(cString: strerror(errno)))")
        }
    }
}
