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

    static func launch(
        _ name: String,
        _ arguments: [String],
        currentDirectory: URL? = nil,
        stdin: Pipe? = nil,
        stdout: Pipe? = nil,
        stderr: Pipe? = nil
    ) throws -> Process {
        let process = Process()
        process.executableURL = try self.url(name)
        process.arguments = arguments
        process.currentDirectoryURL = currentDirectory
        process.standardInput = stdin ?? FileHandle.nullDevice
        process.standardOutput = stdout ?? FileHandle.nullDevice
        process.standardError = stderr ?? FileHandle.nullDevice
        try process.run()
        return process
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

    /// Runs a command to completion (killing it after `timeout`), feeding it `input`.
    static func run(
        _ name: String,
        _ arguments: [String],
        input: String? = nil,
        currentDirectory: URL? = nil,
        timeout: Duration = .seconds(60)
    ) async throws -> Outcome {
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        let process = try self.launch(
            name,
            arguments,
            currentDirectory: currentDirectory,
            stdin: stdin,
            stdout: stdout,
            stderr: stderr
        )
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
        }
        try stdin.fileHandleForWriting.close()
        async let out = Self.readToEnd(stdout.fileHandleForReading)
        async let err = Self.readToEnd(stderr.fileHandleForReading)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                process.terminate()
                throw TestFailure("\(name) \(arguments) did not finish within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return Outcome(
            status: process.terminationStatus,
            stdout: String(decoding: await out, as: UTF8.self),
            stderr: String(decoding: await err, as: UTF8.self)
        )
    }
}
