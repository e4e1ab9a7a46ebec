import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `english`, in the user's language, with `arguments` in its `%@` places: what ferry and ferryd show people.
///
/// The English text is the key: each language is a strings table (`Resources/LANGUAGE.lproj/Localizable.strings`,
/// SwiftPM resources with English the default localization), so a third language is a file, not a code change, and
/// a binary installed without its resources, or a text a table lacks, still says it in English. Logs stay English:
/// they are for tools.
public func localized(_ english: String, _ arguments: String...) -> String {
    let text = Localization.table[english] ?? english
    guard !arguments.isEmpty else { return text }
    // `%@` takes the next argument; `%2$@` the second, for a language that says things in another order.
    var result = ""
    var next = 0
    var rest = Substring(text)
    while let percent = rest.firstIndex(of: "%") {
        result += rest[..<percent]
        rest = rest[rest.index(after: percent)...]
        if rest.hasPrefix("@") {
            result += next < arguments.count ? arguments[next] : ""
            next += 1
            rest = rest.dropFirst()
        } else if let dollar = rest.firstIndex(of: "$"), let position = Int(rest[..<dollar]),
            rest[rest.index(after: dollar)...].hasPrefix("@")
        {
            result += (1...arguments.count).contains(position) ? arguments[position - 1] : ""
            rest = rest[rest.index(dollar, offsetBy: 2)...]
        } else {
            result += "%"
        }
    }
    return result + rest
}

/// The user's language and its table.
public enum Localization {
    /// `zh-Hans` when the locale says Chinese (`LC_ALL`, else `LC_MESSAGES`, else `LANG`, starting with `zh`), else `en`.
    public static let language: String = {
        for name in ["LC_ALL", "LC_MESSAGES", "LANG"] {
            guard let value = getenv(name).map({ String(cString: $0) }), !value.isEmpty else { continue }
            return value.hasPrefix("zh") ? "zh-Hans" : "en"
        }
        return "en"
    }()

    /// The strings table of ``language``, read with Foundation from the resource bundle SwiftPM places beside the
    /// executable; empty for English, or when the bundle is not there.
    static let table: [String: String] = Self.load(Self.language)

    /// The table of `language`; empty if it has none.
    public static func load(_ language: String) -> [String: String] {
        // SwiftPM writes `zh-hans.lproj` in lower case on Linux, where Bundle's lookup is case-sensitive.
        guard language != "en", let bundle = Self.bundle,
            let path = [language, language.lowercased()].lazy.compactMap({
                bundle.path(forResource: "Localizable", ofType: "strings", inDirectory: nil, forLocalization: $0)
            }).first,
            let data = FileManager.default.contents(atPath: path),
            let table = try? PropertyListSerialization.propertyList(from: data, format: nil) as? [String: String]
        else { return [:] }
        return table
    }

    /// `Ferry_FerryTransport.resources` beside the executable (where SwiftPM builds and where the README installs it).
    /// Not `Bundle.module`, which stops the program when the bundle is missing.
    static let bundle: Bundle? = {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let folder = executable.deletingLastPathComponent()
        return Bundle(path: folder.appendingPathComponent("Ferry_FerryTransport.resources").path)
    }()
}
