/// The small text records Ferry keeps of a transfer to resume (a kept download's, a kept upload's, on either side): a
/// header line naming the kind and its version, then one `key value` line per field. Text, so a person can read what
/// was kept; one field per line, so a value may hold spaces (names do), never a line break (names cannot).
public enum KeyValueRecord {
    /// The fields of `text`, or `nil` if its first line is not `header` or a line has no key.
    public static func fields(of text: String, header: String) -> [Substring: Substring]? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.first.map(String.init) == header else { return nil }
        var fields: [Substring: Substring] = [:]
        for line in lines.dropFirst() {
            guard let space = line.firstIndex(of: " ") else { return nil }
            fields[line[..<space]] = line[line.index(after: space)...]
        }
        return fields
    }
}
