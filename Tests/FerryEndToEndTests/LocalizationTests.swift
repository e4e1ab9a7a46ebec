import FerryProtocol
import Foundation
import Testing

/// What ferry and ferryd say to people, in English and in Simplified Chinese (LANG=zh_CN.UTF-8): every text in both
/// tables, and the shell, the subcommands and ferryd's start-up speaking Chinese when the locale says so.
@Suite("Languages")
struct LocalizationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func table(_ language: String) throws -> [String: String] {
        let url = Self.repository.appendingPathComponent(
            "Sources/FerryTransport/Resources/\(language).lproj/Localizable.strings"
        )
        let data = try Data(contentsOf: url)
        return try #require(try PropertyListSerialization.propertyList(from: data, format: nil) as? [String: String])
    }

    /// Every text the code passes to `localized` (a string literal, or the shell's menu lines), and every error
    /// code's name, which a refusal shows in the user's language.
    static func textsInTheCode() throws -> Set<String> {
        var texts: Set<String> = []
        let sources = Self.repository.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(atPath: sources.path)?.compactMap { $0 as? String } ?? []
        let literal = try Regex(#"localized\(\s*"((?:[^"\\]|\\.)*)""#)
        for file in files where file.hasSuffix(".swift") {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for match in text.matches(of: literal) {
                if let captured = match.output[1].substring {
                    texts.insert(String(captured).replacingOccurrences(of: #"\""#, with: "\""))
                }
            }
            if file.hasSuffix("Shell.swift"), let start = text.range(of: "static var menu"),
                let end = text.range(of: ".map { localized($0) }")
            {
                for match in text[start.upperBound..<end.lowerBound].matches(of: try Regex(#""((?:[^"\\]|\\.)*)""#)) {
                    if let captured = match.output[1].substring { texts.insert(String(captured)) }
                }
            }
        }
        for raw in Array(100...112) + Array(200...212) {
            texts.insert(ErrorCode(rawValue: UInt16(raw)).name)
        }
        return texts
    }

    @Test func everyTextIsInEveryTableWithTheSamePlaceholders() throws {
        let english = try Self.table("en")
        let chinese = try Self.table("zh-Hans")
        let texts = try Self.textsInTheCode()
        #expect(texts.count > 90)
        for text in texts {
            #expect(english[text] == text, "missing from en: \(text)")
            #expect(chinese[text] != nil, "missing from zh-Hans: \(text)")
        }
        #expect(Set(english.keys) == Set(chinese.keys), "the tables have the same texts")
        #expect(Set(english.keys).subtracting(texts).isEmpty, "no text the code no longer says")
        let placeholder = try Regex(#"%(?:\d+\$)?@"#)
        for (key, value) in chinese {
            #expect(
                key.matches(of: placeholder).count == value.matches(of: placeholder).count,
                "placeholders of \(key) → \(value)"
            )
        }
    }

    @Test(.enabled(if: User.canRunUnprivileged))
    func theShellSubcommandsAndFerrydSpeakChineseWhenTheLocaleSaysSo() async throws {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        try Data("hello\n".utf8).write(to: work.appendingPathComponent("hello.txt"))
        try User.handOver(library)
        try User.handOver(work)
        let chinese = ["LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""]

        // ferryd's start-up line.
        let output = Pipe()
        let process = try Binaries.launch(
            "ferryd",
            ["--root", library.path, "--port", "0"],
            as: .ordinaryUser,
            environment: chinese,
            stdout: output
        )
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        var text = ""
        while !text.contains("\n") {
            let more = output.fileHandleForReading.availableData
            guard !more.isEmpty else { break }
            text += String(decoding: more, as: UTF8.self)
        }
        #expect(text.hasPrefix("ferryd: 正在监听 127.0.0.1:"), "\(text)")
        let port = try #require(Int(text.split(separator: ":")[2].prefix { $0.isNumber }))

        func ferry(_ arguments: [String], input: String? = nil) async throws -> Binaries.Outcome {
            try await Binaries.run(
                "ferry",
                arguments + ["--port", "\(port)"],
                as: .ordinaryUser,
                environment: chinese,
                input: input,
                currentDirectory: work
            )
        }
        let empty = try await ferry(["list"])
        #expect(empty.stdout == "文件库为空\n", "\(empty.stdout)")
        let put = try await ferry(["put", "hello.txt"])
        #expect(put.stdout == "已存储 hello.txt → hello.txt（6 B，已校验）\n", "\(put.stdout)")
        let again = try await ferry(["put", "hello.txt"])
        #expect(again.stderr.contains("服务器上已有 'hello.txt'：文件已经存在（加 --overwrite 覆盖）"), "\(again.stderr)")
        let missing = try await ferry(["get", "missing.txt"])
        #expect(missing.stderr.hasPrefix("ferry: 文件不存在（服务器说："), "\(missing.stderr)")
        let listed = try await ferry(["list"])
        #expect(listed.stdout.hasSuffix("1 个文件\n"), "\(listed.stdout)")

        let shell = try await ferry(["shell"], input: "help\nget hello.txt --force\nfrobnicate\nexit\n")
        #expect(shell.stdout.contains("命令：\n  list          显示文件库中的文件"), "\(shell.stdout)")
        #expect(shell.stdout.contains("已接收 hello.txt（6 B，已校验）"), "\(shell.stdout)")
        #expect(shell.stdout.contains("未知命令 'frobnicate'，请输入正确命令"), "\(shell.stdout)")

        let help = try await ferry(["--help"])
        #expect(help.stdout.contains("交互式命令行（默认）：list、get 名称"), "\(help.stdout)")
    }

    /// On a terminal the shell edits lines with libedit, which crashed on the Chinese prompt until the shell set the C
    /// library's locale for it.
    @Test(.enabled(if: Binaries.canProvideTerminal && CommandLineTests.hasLineEditing, "needs script(1) and libedit"))
    func theShellSpeaksChineseOnATerminal() async throws {
        let library = Scratch.makeDirectory("library")
        try Data("quarterly".utf8).write(to: library.appendingPathComponent("报告.txt"))
        let daemon = try await CommandLineTests.Daemon.start(root: library)
        defer { _ = daemon.stop() }
        let shell = try await Binaries.run(
            "ferry",
            ["--port", "\(daemon.port)"],
            environment: ["LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""],
            input: "list\nget 报\t\nexit\n",
            currentDirectory: Scratch.makeDirectory("work"),
            underTerminal: true
        )
        #expect(shell.status == 0, "\(shell.stdout)")
        #expect(shell.stdout.contains("已连接到 Ferry 服务器"), "\(shell.stdout)")
        #expect(shell.stdout.contains("请输入命令> "), "\(shell.stdout)")
        #expect(shell.stdout.contains("已接收 报告.txt（9 B，已校验）"), "\(shell.stdout)")
    }
}
