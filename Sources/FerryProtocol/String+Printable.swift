extension String {
    /// The text with its control characters (C0, DEL and C1) written as `\u{1b}`: text that came from a peer, shown
    /// to a person, cannot then move a terminal's cursor, clear its screen or set its clipboard.
    public var escapingControlCharacters: String {
        guard self.unicodeScalars.contains(where: Self.isControl) else { return self }
        var escaped = ""
        for scalar in self.unicodeScalars {
            if Self.isControl(scalar) {
                escaped += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }
}
