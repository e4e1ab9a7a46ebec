extension Duration {
    /// Milliseconds with one decimal, for log lines.
    var milliseconds: Double {
        let (seconds, attoseconds) = self.components
        return ((Double(seconds) * 1000 + Double(attoseconds) / 1e15) * 10).rounded() / 10
    }
}
