/// Human-readable sizes in binary units, as `ls -h` and most file managers show them.
enum Sizes {
    static func describe(_ bytes: UInt64) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        guard bytes >= 1024 else { return "\(bytes) B" }
        var value = Double(bytes) / 1024
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let rounded = (value * 10).rounded() / 10
        return rounded >= 100 ? "\(Int(value.rounded())) \(units[unit])" : "\(rounded) \(units[unit])"
    }

    static func rate(_ bytesPerSecond: Double) -> String {
        self.describe(UInt64(max(0, min(bytesPerSecond, Double(UInt64.max / 2))))) + "/s"
    }
}
