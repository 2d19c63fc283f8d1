// GradingProcess: grade an exercise in a child process, so that a crash or an
// endless loop in a student's code becomes a report in words, not a dead
// terminal (Notebooks/exercises.md, "How the exercises work").
//
// The child (the `exercises` program itself, hidden command `grade-one`)
// announces each check on its standard error just before running it, as one
// line `<marker>title`. The parent reads both of the child's outputs while it
// runs, and so knows, when the child crashes or runs past the time limit,
// which check it was in. The report then leads with what happened and where
// ("crashed in the check 'backward: the task loss's dL/dlogits'"), followed by
// the runtime's own error line and the few backtrace lines that name the
// student's files — never the ~50 lines of frames inside the standard library.
import Foundation

/// How a child grading process ended, and what it printed.
public struct GradingOutcome {
    public enum Ending: Equatable {
        /// Ran to the end with this exit status.
        case exited(Int32)
        /// Stopped by this signal (a trap: failed precondition, index out of range, nil unwrapped).
        case crashed(Int32)
        /// Still running at the time limit, and stopped.
        case timedOut(seconds: Double)
    }
    public let ending: Ending
    public let standardOutput: String
    /// The child's standard error without the check announcements.
    public let standardError: String
    /// The last check the child announced (the one running when it ended), or nil.
    public let lastCheck: String?
    /// Whether that check had finished: the child then stopped between checks,
    /// preparing the next one (routing the inputs the next checks share).
    public let lastCheckFinished: Bool
}

public enum GradingProcess {
    /// Starts an announcement line on the child's standard error (a control
    /// character no message contains, then a word).
    public static let marker = "\u{1E}check "

    /// Ends the announcement of a check that has finished.
    static let finished = "\u{1F}finished"

    /// In the child: announce `title` to the parent (unbuffered, so a crash loses nothing).
    public static func announce(_ title: String) {
        FileHandle.standardError.write(Data((marker + title + "\n").utf8))
    }

    /// In the child: the check just announced has finished.
    public static func announceFinished() {
        FileHandle.standardError.write(Data((marker + finished + "\n").utf8))
    }

    /// Runs `program` with `arguments`, stops it after `timeLimit` seconds,
    /// and returns how it ended. nil if it could not be started. If it is still
    /// running after `slowAfter` seconds, `onSlow` is called once with the check
    /// it is in, so that a long wait is not a silent one.
    public static func run(_ program: URL, arguments: [String], timeLimit: Double,
                           slowAfter: Double = 5, onSlow: ((String?) -> Void)? = nil) -> GradingOutcome? {
        let child = Process()
        child.executableURL = program
        child.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        // The runtime's backtracer must not wait for a keypress, nor colour its output.
        if environment["SWIFT_BACKTRACE"] == nil { environment["SWIFT_BACKTRACE"] = "interactive=no,color=no" }
        child.environment = environment
        let out = Pipe(), err = Pipe()
        child.standardOutput = out
        child.standardError = err
        // Both pipes are drained while the child runs (a full pipe would block it).
        final class Collected { var out = Data(), err = Data() }
        let lock = NSLock(), collected = Collected()
        let group = DispatchGroup()
        for (pipe, isError) in [(out, false), (err, true)] {
            group.enter()
            DispatchQueue.global().async {
                while true {
                    let chunk = pipe.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    lock.lock()
                    if isError { collected.err.append(chunk) } else { collected.out.append(chunk) }
                    lock.unlock()
                }
                group.leave()
            }
        }
        do { try child.run() } catch { return nil }
        let start = Date(), deadline = start.addingTimeInterval(timeLimit)
        var warned = onSlow == nil
        while child.isRunning && Date() < deadline {
            usleep(10_000)
            if !warned && Date().timeIntervalSince(start) >= slowAfter {
                warned = true
                lock.lock()
                let soFar = String(decoding: collected.err, as: UTF8.self)
                lock.unlock()
                onSlow?(parseAnnouncements(soFar).lastCheck)
            }
        }
        var timedOut = false
        if child.isRunning {
            timedOut = true
            // SIGKILL, not SIGTERM: a shell waiting on its own child ignores that.
            // The child leads its own process group (Foundation starts it so);
            // stopping the group stops anything it started, which would
            // otherwise hold its pipes open.
            let pid = child.processIdentifier
            if kill(-pid, SIGKILL) != 0 { kill(pid, SIGKILL) }
        }
        child.waitUntilExit()
        // Its output ends when it does (a grandchild could keep a pipe open: wait a little only).
        _ = group.wait(timeout: .now() + 2)
        lock.lock()
        let stdout = String(decoding: collected.out, as: UTF8.self)
        let stderrText = String(decoding: collected.err, as: UTF8.self)
        lock.unlock()
        let (lastCheck, lastCheckFinished, kept) = parseAnnouncements(stderrText)
        let ending: GradingOutcome.Ending
        if timedOut {
            ending = .timedOut(seconds: timeLimit)
        } else if child.terminationReason == .uncaughtSignal {
            ending = .crashed(child.terminationStatus)
        } else {
            ending = .exited(child.terminationStatus)
        }
        return GradingOutcome(ending: ending, standardOutput: stdout,
                              standardError: kept, lastCheck: lastCheck,
                              lastCheckFinished: lastCheckFinished)
    }

    /// The child's standard error split into its announcements (the last check,
    /// whether it finished) and everything else.
    static func parseAnnouncements(_ text: String) -> (lastCheck: String?, finished: Bool, rest: String) {
        var lastCheck: String? = nil, finishedCheck = false
        var kept: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            guard line.hasPrefix(marker) else { kept.append(line); continue }
            let word = String(line.dropFirst(marker.count))
            if word == finished { finishedCheck = true } else { lastCheck = word; finishedCheck = false }
        }
        return (lastCheck, finishedCheck, kept.joined(separator: "\n"))
    }

    /// "  1   0x000055a4… SwitchRouter.route(…) + 459 in exercises at /…/X.swift:56:51"
    /// → "SwitchRouter.route(…) at /…/X.swift:56:51": the function and the line.
    static func shortFrame(_ line: String) -> String {
        var text = Substring(line)
        if let address = text.range(of: " 0x") {
            text = text[address.upperBound...].drop { $0.isHexDigit }.drop { $0 == " " }
        }
        if let inRange = text.range(of: " in "), let at = text.range(of: " at ", range: inRange.upperBound..<text.endIndex) {
            let function = text[..<inRange.lowerBound]
            let plus = function.range(of: " + ").map { function[..<$0.lowerBound] } ?? function
            return plus + " at " + text[at.upperBound...]
        }
        return String(text)
    }

    /// The report of an exercise whose child crashed or ran out of time: the
    /// explanation first, then the runtime's error line and at most `frames`
    /// backtrace lines (those naming Sources/Exercises first). nil when the
    /// child exited normally (it printed its own report).
    public static func failureReport(exercise number: Int, _ outcome: GradingOutcome, frames: Int = 4) -> String? {
        let title = Grader.exercises.first { $0.number == number }?.title ?? "exercise \(number)"
        let file = Grader.exercises.first { $0.number == number }?.file ?? "Sources/Exercises"
        let place = outcome.lastCheck.map {
            outcome.lastCheckFinished ? "after the check '\($0)', preparing the next one" : "in the check '\($0)'"
        } ?? "before its first check"
        switch outcome.ending {
        case .exited:
            return nil
        case .timedOut(let seconds):
            let s = String(format: "%g", seconds)
            return "Exercise \(number) — \(title): FAILED (stopped after \(s) s)\n" +
                wrap("exercise \(number): still running after \(s) s \(place) — a loop in your code that never " +
                     "ends? (the slowest exercise takes about a second; --time-limit S allows longer)",
                     indent: "        ").joined(separator: "\n") +
                "\n  Your file: \(file)"
        case .crashed(let signal):
            var lines = ["Exercise \(number) — \(title): FAILED (crashed, signal \(signal))"]
            lines += wrap("exercise \(number): your code stopped the program \(place) — a failed precondition, " +
                          "an index out of range or a nil unwrapped (built with -O, the runtime does not always say " +
                          "which; the line of your file below does):",
                          indent: "        ")
            let all = outcome.standardError.split(separator: "\n").map(String.init)
            let errorLines = all.filter {
                $0.contains("Fatal error") || $0.contains("Precondition failed") || $0.contains("Assertion failed")
                    || $0.contains("Program crashed")
            }
            // Frame lines start with a frame number; prefer the student's files.
            let frameLines = all.filter { $0.trimmingCharacters(in: .whitespaces).first?.isNumber == true && $0.contains(" in ") }
            let theirs = frameLines.filter { $0.contains("Sources/Exercises/") }
            let shown = Array((theirs.isEmpty ? frameLines : theirs).prefix(frames))
            for line in errorLines.prefix(2) + shown.map(shortFrame) {
                lines.append("        " + (line.count > 200 ? String(line.prefix(200)) + "…" : line))
            }
            if errorLines.isEmpty && shown.isEmpty { lines.append("        (the runtime printed no backtrace)") }
            lines.append("        the whole backtrace: swift run exercises grade-one \(number)")
            lines.append("  Your file: \(file)")
            return lines.joined(separator: "\n")
        }
    }
}
