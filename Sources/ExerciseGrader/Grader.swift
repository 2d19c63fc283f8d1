// Grader: runs an exercise's checks on a submission and says, in words, what
// is wrong.
//
// Each exercise is a list of checks, from the shape of what was returned to
// the behaviour inside a whole MoE layer. A check either passes or explains its
// failure the way a teaching assistant would: which number, what it should
// have been, and the usual reason it is not ("did you forget the 2·lse
// factor?"). Later checks that cannot mean anything once an earlier one failed
// (a gradient check of a router whose routing is malformed) are skipped and
// say so, rather than piling up confusing failures.
//
// How the grader knows the right answer. Never by calling a reference
// solution: the checks compare against the library (softmaxRows,
// TopKGating.select, Capacity), against numbers worked out by hand in the
// notebooks, against finite differences of the submission's own forward pass
// (GradientCheck), and against invariants any correct answer satisfies
// (every expert takes exactly C tokens). So reading the grader tells a
// student what is checked, not how to write it.
//
// Files: this one (the catalogue and the report), Grader+Helpers.swift (finite
// differences, routing validation, a whole-layer gradient check), and one
// Grader+ExerciseN file per exercise.
import Foundation
import MoE

/// One exercise, as `exercises list` shows it.
public struct ExerciseInfo {
    public let number: Int
    public let title: String
    /// The file a student edits, relative to the package root.
    public let file: String
    /// The section of Notebooks/exercises.md that sets it.
    public let section: String
    /// easy, medium or hard.
    public let difficulty: String
}

/// The outcome of one check.
public struct CheckOutcome {
    public enum Status { case passed, failed, skipped }
    public let title: String
    public let status: Status
    /// What is wrong (failed) or why it did not run (skipped); nil when passed.
    public let message: String?
}

/// Every check of one exercise on one submission.
public struct ExerciseResult: CustomStringConvertible {
    public let info: ExerciseInfo
    public let checks: [CheckOutcome]
    public let seconds: Double

    public var passed: Bool { !checks.isEmpty && checks.allSatisfy { $0.status == .passed } }
    public var failedCount: Int { checks.filter { $0.status == .failed }.count }

    /// A heading, then one line per check and, under a failure, what is wrong.
    public var description: String {
        let verdict = passed ? "PASSED" : "FAILED"
        var lines = ["Exercise \(info.number) — \(info.title): \(verdict) " +
                     "(\(checks.filter { $0.status == .passed }.count) of \(checks.count) checks, " +
                     String(format: "%.1f s)", seconds)]
        for check in checks {
            switch check.status {
            case .passed: lines.append("  ok    \(check.title)")
            case .failed: lines.append("  FAIL  \(check.title)")
            case .skipped: lines.append("  skip  \(check.title)")
            }
            if let message = check.message {
                let prefix = check.status == .failed ? "exercise \(info.number): " : ""
                lines.append(contentsOf: wrap(prefix + message, indent: "        "))
            }
        }
        if !passed {
            lines.append("  The exercise: Notebooks/exercises.md, \(info.section)")
            lines.append("  Your file: \(info.file)")
        }
        return lines.joined(separator: "\n")
    }
}

/// Collects the outcomes of one exercise's checks.
final class Checklist {
    private(set) var outcomes: [CheckOutcome] = []

    /// Runs one check. `body` returns nil when it passes, or what is wrong.
    /// Returns whether it passed, so a check the rest depends on can stop the list:
    ///
    ///     guard list.check("…") { … } else { return }
    @discardableResult
    func check(_ title: String, _ body: () -> String?) -> Bool {
        Grader.checkWillRun?(title)
        let problem = body()
        Grader.checkDidRun?()
        outcomes.append(CheckOutcome(title: title, status: problem == nil ? .passed : .failed, message: problem))
        return problem == nil
    }

    /// A position in the list, for `allPassed(since:)`.
    var mark: Int { outcomes.count }

    /// Did every check after `mark` pass? (Later checks that only mean
    /// something once these pass are skipped otherwise.)
    func allPassed(since mark: Int) -> Bool { outcomes[mark...].allSatisfy { $0.status == .passed } }

    /// Records checks that did not run, and why.
    func skip(_ titles: [String], because reason: String) {
        for (i, title) in titles.enumerated() {
            outcomes.append(CheckOutcome(title: title, status: .skipped, message: i == 0 ? reason : nil))
        }
    }
}

/// The catalogue of exercises and the entry point of every check.
public enum Grader {
    public static let exercises: [ExerciseInfo] = [
        ExerciseInfo(number: 1, title: "top-1 (Switch) routing, forward and backward",
                     file: "Sources/Exercises/Exercise1-SwitchRouter.swift", section: "§1", difficulty: "easy"),
        ExerciseInfo(number: 2, title: "the router z-loss and its backward",
                     file: "Sources/Exercises/Exercise2-RouterZLoss.swift", section: "§2", difficulty: "easy"),
        ExerciseInfo(number: 3, title: "a capacity factor: overflow in token order, drops counted",
                     file: "Sources/Exercises/Exercise3-CapacityRouter.swift", section: "§3", difficulty: "medium"),
        ExerciseInfo(number: 4, title: "remove the balancing loss and measure the collapse",
                     file: "Sources/Exercises/Exercise4-Collapse.swift", section: "§4", difficulty: "medium"),
        ExerciseInfo(number: 5, title: "noisy top-k gating, with its noise network's backward",
                     file: "Sources/Exercises/Exercise5-NoisyTopKRouter.swift", section: "§5", difficulty: "hard"),
        ExerciseInfo(number: 6, title: "expert-choice routing",
                     file: "Sources/Exercises/Exercise6-ExpertChoiceRouter.swift", section: "§6", difficulty: "hard"),
    ]

    /// Called with each check's title just before it runs. The `exercises`
    /// command's child process announces it to its parent this way, so that a
    /// crash or a hang can be reported with the check that was running.
    public static var checkWillRun: ((String) -> Void)? = nil
    /// Called when that check has finished (passed or failed).
    public static var checkDidRun: (() -> Void)? = nil

    /// Runs exercise `number`'s checks on `submission`.
    public static func grade(_ number: Int, _ submission: ExerciseSubmission) -> ExerciseResult {
        guard let info = exercises.first(where: { $0.number == number }) else {
            preconditionFailure("Grader: there is no exercise \(number) (1–\(exercises.count))")
        }
        // One thread: the checks are tiny, and results then do not depend on the machine.
        let savedThreads = Parallel.threads
        Parallel.threads = 1
        defer { Parallel.threads = savedThreads }
        let list = Checklist()
        let start = DispatchTime.now().uptimeNanoseconds
        switch number {
        case 1: gradeSwitchRouting(submission, list)
        case 2: gradeRouterZLoss(submission, list)
        case 3: gradeCapacity(submission, list)
        case 4: gradeCollapse(submission, list)
        case 5: gradeNoisyTopK(submission, list)
        default: gradeExpertChoice(submission, list)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        return ExerciseResult(info: info, checks: list.outcomes, seconds: seconds)
    }
}

/// Breaks a message into lines of at most `width` characters after `indent`
/// (79: an 80-column terminal, without wrapping a word it did not choose).
func wrap(_ text: String, indent: String, width: Int = 79) -> [String] {
    var lines: [String] = []
    for paragraph in text.split(separator: "\n", omittingEmptySubsequences: false) {
        var line = ""
        for word in paragraph.split(separator: " ") {
            if !line.isEmpty && indent.count + line.count + 1 + word.count > width {
                lines.append(indent + line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        lines.append(indent + line)
    }
    return lines
}
