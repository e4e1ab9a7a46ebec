import Foundation

/// The figures of the fault-injection tests, as a table row each: printed only when `FERRY_FAULT_TABLE` is set (see
/// README, "Resuming"), so that the table in the notes comes from a run, not from memory.
enum FaultTable {
    static func record(_ direction: String, _ fault: String, moved: Int, size: Int, outcome: String) {
        guard ProcessInfo.processInfo.environment["FERRY_FAULT_TABLE"] != nil else { return }
        let ratio = String(format: "%.3f", Double(moved) / Double(max(size, 1)))
        print("FAULT-TABLE | \(direction) | \(fault) | \(moved) B (\(ratio)× the file) | \(outcome) |")
    }
}
