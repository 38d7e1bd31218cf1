/// Prints rows as an aligned table: the first row is the header; columns in `numeric` are
/// right-aligned. Two spaces between columns; no trailing spaces.
func printTable(_ rows: [[String]], numeric: Set<Int> = [], indent: Int = 0) {
    guard let width = rows.map(\.count).max() else { return }
    var widths = [Int](repeating: 0, count: width)
    for row in rows {
        for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    let pad = String(repeating: " ", count: indent)
    for row in rows {
        var line = pad
        for (i, cell) in row.enumerated() {
            let fill = String(repeating: " ", count: widths[i] - cell.count)
            let last = i == row.count - 1
            if numeric.contains(i) {
                line += fill + cell
            } else {
                line += cell + (last ? "" : fill)
            }
            if !last { line += "  " }
        }
        print(line)
    }
}
