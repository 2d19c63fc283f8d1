// TerminalOutput: aligned tables and a progress bar for the command-line tools.
//
// Results in this project are read in two places: live in a terminal, and
// later in a log file or a CI page where stdout was redirected. The two want
// different things, which is why the progress bar asks which one it is
// writing to (`isatty`):
//
//   * A terminal can redraw a line in place: `\r` moves the cursor back to the
//     start of the line and the next write overdraws it. One line that updates
//     is easy to watch.
//   * A file cannot: every `\r` redraw stays in it, so a log gets thousands of
//     near-identical lines glued together with carriage returns. There we
//     write a plain line every 10% and one at the end.
//
// Either way a line must fit the terminal's width. A redrawn line one column
// too wide wraps, `\r` then returns only to the start of the second row, and
// every redraw leaves a row behind: a "staircase" of hundreds of rows per
// epoch. So every line is fitted to the width (the terminal's, from
// TIOCGWINSZ or $COLUMNS; 80 when unknown, as in a log): the bar narrows
// first, then the time-left estimate goes, then the status is cut with "…".
//
// Tables right-align numbers, so that digits of equal place value line up
// and a column of accuracies can be compared by eye, and left-align words.
//
// Both write through `print`'s own C stdio buffer (`fputs` + `fflush`), so their
// output interleaves correctly with `print` calls in the same program.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

// MARK: - Table

/// Text in aligned columns under a header and a rule.
///
///     var table = TextTable(headers: ["model", "experts", "accuracy"])
///     table.addRow(["dense", "1", "97.8%"])
///     table.addRow(["moe top-2", "8", "98.4%"])
///     print(table.render())
///     // model      experts  accuracy
///     // ---------  -------  --------
///     // dense            1     97.8%
///     // moe top-2        8     98.4%
public struct TextTable {
    /// Where a column's cells sit within its width.
    public enum Alignment {
        case left, right
        /// Right if every non-empty cell of the column is a number, else left.
        case automatic
    }

    public private(set) var headers: [String]
    public private(set) var rows: [[String]] = []
    private var alignments: [Alignment]

    /// - Parameter alignments: one per column; missing entries (or `nil`) mean `.automatic`.
    public init(headers: [String], alignments: [Alignment]? = nil) {
        self.headers = headers
        self.alignments = alignments ?? []
    }

    /// Appends a row. A short row is padded with empty cells; a long one adds columns.
    public mutating func addRow(_ cells: [String]) {
        rows.append(cells)
    }

    /// The table as lines joined by newlines (no trailing newline, ready for `print`).
    ///
    /// - Complexity: O(total characters).
    public func render() -> String {
        let columns = max(headers.count, rows.map(\.count).max() ?? 0)
        func cell(_ row: [String], _ column: Int) -> String { column < row.count ? row[column] : "" }

        // Widths count Characters, so "×" or "é" count as one column, as a terminal shows them.
        var widths = (0..<columns).map { cell(headers, $0).count }
        for row in rows {
            for column in 0..<columns { widths[column] = max(widths[column], cell(row, column).count) }
        }
        let rightAligned = (0..<columns).map { column -> Bool in
            switch column < alignments.count ? alignments[column] : .automatic {
            case .left: return false
            case .right: return true
            case .automatic:
                let cells = rows.map { cell($0, column) }.filter { !$0.isEmpty }
                return !cells.isEmpty && cells.allSatisfy(TextTable.looksNumeric)
            }
        }

        func line(_ cells: [String]) -> String {
            let padded = (0..<columns).map { column -> String in
                let text = cell(cells, column)
                let padding = String(repeating: " ", count: widths[column] - text.count)
                return rightAligned[column] ? padding + text : text + padding
            }
            // Trailing spaces are invisible but make diffs and copy-paste messy.
            return String(padded.joined(separator: "  ").reversed().drop(while: { $0 == " " }).reversed())
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(headers), rule] + rows.map(line)).joined(separator: "\n")
    }

    /// "0.2147", "-3", "97.8%", "1.5×", "12ms", "203,530", "1.2M": a number,
    /// perhaps with thousands separators and a unit or magnitude suffix.
    static func looksNumeric(_ text: String) -> Bool {
        var body = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: ",", with: "")
        for suffix in ["%", "×", "x", "ms", "s", "k", "K", "M", "G"] where body.hasSuffix(suffix) {
            body.removeLast(suffix.count)
            break
        }
        return Double(body) != nil
    }
}

// MARK: - Progress bar

/// A progress line for a long loop such as a training epoch.
///
/// On a terminal it redraws one line in place, at most 20 times a second:
///
///     epoch 3  [#########---------------]  384/1000  loss 0.2147 aux 2.10  0:12 elapsed, 0:19 left
///
/// When stdout is a file or a pipe it writes a plain line at each 10% and one
/// when finished, and never a carriage return.
///
///     let bar = ProgressBar(title: "epoch 3", total: batches)
///     for batch in 0..<batches { …; bar.update(batch + 1, status: "loss \(loss)") }
///     bar.finish(status: "loss \(loss)")
///
/// Call it from one thread only.
public final class ProgressBar {
    /// Whether standard output is a terminal (rather than a file or a pipe).
    public static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) != 0 }

    /// The width lines are fitted to: the terminal's columns when standard
    /// output is one, else $COLUMNS, else 80.
    public static var terminalColumns: Int {
        var size = winsize()
        if stdoutIsTerminal && ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col >= 20 {
            return Int(size.ws_col)
        }
        if let text = ProcessInfo.processInfo.environment["COLUMNS"], let columns = Int(text), columns >= 20 {
            return columns
        }
        return 80
    }

    /// Writes `text` to standard output and flushes it, so it shows immediately
    /// even though there is no newline.
    public static func writeToStandardOutput(_ text: String) {
        fputs(text, stdout)
        fflush(stdout)
    }

    public let title: String
    public let total: Int
    public let isTerminal: Bool
    /// Every line written is at most `columns − 1` characters (the last column
    /// stays free: a terminal may wrap on writing it).
    public let columns: Int
    /// Off a terminal, also write a line at each 10% (off for short loops such
    /// as a training epoch, where one line per loop is enough).
    public var reportsTenths = true
    private let output: (String) -> Void
    private let clock: () -> Double
    private let startTime: Double

    private var done = 0
    private var lastDrawTime = -Double.infinity
    private var lastLineLength = 0
    private var lastTenthReported = 0
    private var isFinished = false

    /// Redraws closer together than this are skipped: a terminal cannot show
    /// more than ~20 per second usefully, and each costs a system call.
    private let redrawInterval = 0.05  // seconds

    /// - Parameters:
    ///   - isTerminal: redraw in place (`true`) or write plain lines (`false`).
    ///   - output: where text goes; tests pass a closure that collects it.
    ///   - clock: seconds on a monotonic clock; tests pass a fake one.
    ///   - columns: the width to fit lines to (the terminal's; 80 when unknown).
    public init(title: String, total: Int, isTerminal: Bool = ProgressBar.stdoutIsTerminal,
                columns: Int = ProgressBar.terminalColumns,
                output: @escaping (String) -> Void = ProgressBar.writeToStandardOutput,
                clock: @escaping () -> Double = { ProcessInfo.processInfo.systemUptime }) {
        self.title = title
        self.total = total
        self.isTerminal = isTerminal
        self.columns = max(20, columns)
        self.output = output
        self.clock = clock
        self.startTime = clock()
    }

    /// Reports that `done` of `total` steps are complete.
    public func update(_ done: Int, status: String = "") {
        guard !isFinished else { return }
        self.done = min(max(done, 0), max(total, 0))
        let now = clock()
        if isTerminal {
            guard now - lastDrawTime >= redrawInterval || self.done == total else { return }
            lastDrawTime = now
            redraw(status: status, now: now)
        } else {
            let tenth = total > 0 ? self.done * 10 / total : 10
            guard reportsTenths, tenth > lastTenthReported, tenth < 10 else { return }  // 100% is finish's line
            lastTenthReported = tenth
            let head = "\(title): \(tenth * 10)% (\(self.done)/\(total))", time = ProgressBar.clockText(now - startTime)
            output(fit([head + spaced(status) + "  \(time) elapsed", head + spaced(status) + "  " + time],
                       cutting: head, status, "  " + time) + "\n")
        }
    }

    /// Draws the final state and ends the line. Later calls do nothing.
    public func finish(status: String = "") {
        guard !isFinished else { return }
        isFinished = true
        let now = clock()
        if isTerminal {
            redraw(status: status, now: now, final: true)
            output("\n")
        } else {
            let clock = ProgressBar.clockText(now - startTime)
            let head = "\(title): \(done)/\(total) in \(clock)"
            // Without the count if need be: a finished loop's title usually says its range.
            output(fit([head + spaced(status), "\(title): in \(clock)" + spaced(status)],
                       cutting: "\(title): in \(clock)", status, "") + "\n")
        }
    }

    /// The first of `candidates` (most complete first) that fits in
    /// `columns − 1`, else `head + status + tail` with the status cut short by "…".
    private func fit(_ candidates: [String], cutting head: String, _ status: String, _ tail: String) -> String {
        let limit = columns - 1
        if let line = candidates.first(where: { $0.count <= limit }) { return line }
        let room = limit - head.count - tail.count - 3   // "  " before the status, "…" after it
        guard room > 0, !status.isEmpty else { return String((head + tail).prefix(limit)) }
        return head + "  " + status.prefix(room) + "…" + tail
    }

    private func redraw(status: String, now: Double, final: Bool = false) {
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        func bar(_ width: Int) -> String {
            let filled = Int((fraction * Double(width)).rounded(.down))
            return "  [" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]"
        }
        let elapsed = now - startTime
        // Time left assumes the remaining steps go as fast as the ones so far.
        let remaining = done > 0 ? ProgressBar.clockText(elapsed / Double(done) * Double(total - done)) : "?"
        let clock = ProgressBar.clockText(elapsed)
        let times = final ? clock : "\(clock) elapsed, \(remaining) left"
        let counts = "  \(done)/\(total)"
        // Most complete first: a 24-wide bar, shorter time words, narrower
        // bars, the elapsed time alone, then no bar (a finished bar is full anyway).
        let shortTimes = final ? clock : "\(clock), \(remaining) left"
        var candidates = [title + bar(24) + counts + spaced(status) + "  " + times]
        candidates += [24, 16, 10].map { title + bar($0) + counts + spaced(status) + "  " + shortTimes }
        if !final { candidates.append(title + bar(10) + counts + spaced(status) + "  " + clock) }
        candidates.append(title + counts + spaced(status) + "  " + clock)
        if final { candidates.append(title + spaced(status) + "  " + clock) }
        let line = fit(candidates, cutting: title + counts, status, "  " + clock)
        // `\r` returns to the start of the line; spaces then erase the tail of a
        // longer previous line. (Fitted above, the line never wraps, so `\r`
        // always returns to its start.)
        let erase = String(repeating: " ", count: max(0, lastLineLength - line.count))
        lastLineLength = line.count
        output("\r" + line + erase)
    }

    private func spaced(_ status: String) -> String { status.isEmpty ? "" : "  " + status }

    /// Seconds as "m:ss", or "h:mm:ss" from an hour on.
    static func clockText(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0, seconds < 1e7 else { return "?" }
        let whole = Int(seconds.rounded())
        let (hours, minutes, secs) = (whole / 3600, whole / 60 % 60, whole % 60)
        return hours > 0 ? String(format: "%d:%02d:%02d", hours, minutes, secs)
                         : String(format: "%d:%02d", minutes, secs)
    }
}

/// "1 epoch", "30 epochs": a count with its noun in the right number.
/// The plural is `singular + "s"` unless given.
public func counted(_ n: Int, _ singular: String, plural: String? = nil) -> String {
    "\(n) " + (n == 1 ? singular : plural ?? singular + "s")
}
