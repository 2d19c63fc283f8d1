// exercises: grades the exercises of Notebooks/exercises.md.
//
//     swift run exercises list                  # the six exercises and the files to edit
//     swift run exercises check 3               # grade exercise 3 (your answer in Sources/Exercises)
//     swift run exercises check all             # grade all six
//     swift run exercises check all --reference # grade the reference solutions instead
//
// Exit status: 0 when every graded exercise passes, 1 when one fails (or
// crashes, or hangs), 2 when the command line is wrong.
//
// Each exercise is graded in a child process (this same program, with the
// hidden command `grade-one`), so that a crash in your code — a failed
// precondition, an index out of range — ends that exercise, is reported in
// words, and the others are still graded. A child that runs longer than
// `timeLimit` is stopped: an endless loop is reported as one.
import Foundation
import ExerciseGrader
import Exercises
import ExerciseSolutions

let usage = """
usage: exercises list
       exercises check N|all [--reference]

  list          the exercises, their difficulty and the file each one edits
  check N       grade exercise N (1–\(Grader.exercises.count)) in Sources/Exercises
  check all     grade every exercise
  --reference   grade the reference solutions in Sources/ExerciseSolutions instead
The exercises are set in Notebooks/exercises.md.
"""

/// Seconds one exercise may take (the slowest takes about a second).
let timeLimit = 120.0

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("exercises: \(message)\n\(usage)\n".utf8))
    exit(2)
}

func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))   // unbuffered: a crash loses nothing
}

/// Parses "3" or "all" into exercise numbers.
func exerciseNumbers(_ word: String) -> [Int] {
    if word == "all" { return Grader.exercises.map(\.number) }
    guard let n = Int(word), Grader.exercises.contains(where: { $0.number == n }) else {
        fail("no exercise '\(word)': give a number from 1 to \(Grader.exercises.count), or 'all'")
    }
    return [n]
}

/// Grades one exercise in this process and prints the result. Returns whether it passed.
func gradeHere(_ number: Int, reference: Bool) -> Bool {
    let submission: ExerciseSubmission = reference ? ReferenceSubmission() : YourSubmission()
    let result = Grader.grade(number, submission)
    say(result.description)
    return result.passed
}

/// Grades one exercise in a child process; reports a crash or a hang in words.
func gradeInChild(_ number: Int, reference: Bool) -> Bool {
    guard let program = Bundle.main.executableURL else { return gradeHere(number, reference: reference) }
    let child = Process()
    child.executableURL = program
    child.arguments = ["grade-one", String(number)] + (reference ? ["--reference"] : [])
    do { try child.run() } catch { return gradeHere(number, reference: reference) }
    let deadline = Date().addingTimeInterval(timeLimit)
    while child.isRunning && Date() < deadline { usleep(20_000) }
    let title = Grader.exercises.first { $0.number == number }!.title
    if child.isRunning {
        child.terminate()
        child.waitUntilExit()
        say("Exercise \(number) — \(title): FAILED (stopped after \(Int(timeLimit)) s)\n" +
            "        exercise \(number): the checks did not finish in \(Int(timeLimit)) s; a loop in your code may never end")
        return false
    }
    if child.terminationReason == .uncaughtSignal {
        say("Exercise \(number) — \(title): FAILED (crashed, signal \(child.terminationStatus))\n" +
            "        exercise \(number): your code stopped the program — a failed precondition, an index out of " +
            "range or a nil\n        unwrapped; the backtrace above names the line (look for your file in Sources/Exercises)")
        return false
    }
    return child.terminationStatus == 0
}

// MARK: - The command line

var arguments = Array(CommandLine.arguments.dropFirst())
let reference = arguments.contains("--reference")
arguments.removeAll { $0 == "--reference" }
if let unknown = arguments.first(where: { $0.hasPrefix("-") && $0 != "-h" && $0 != "--help" }) {
    fail("unknown option '\(unknown)'")
}

switch arguments.first {
case nil:
    fail("missing command")
case "-h", "--help", "help":
    say(usage)
case "list":
    guard arguments.count == 1 else { fail("'list' takes no arguments") }
    for e in Grader.exercises {
        say("\(e.number)  \(e.difficulty.padding(toLength: 7, withPad: " ", startingAt: 0)) \(e.title)")
        say("           edit \(e.file); set in Notebooks/exercises.md, \(e.section)")
    }
    say("Grade one with `swift run exercises check N`, all with `swift run exercises check all`.")
case "check":
    guard arguments.count == 2 else { fail(arguments.count < 2 ? "'check' needs an exercise number or 'all'" : "too many arguments") }
    let numbers = exerciseNumbers(arguments[1])
    var passed: [Int] = []
    for (i, n) in numbers.enumerated() {
        if i > 0 { say("") }
        if gradeInChild(n, reference: reference) { passed.append(n) }
    }
    if numbers.count > 1 {
        let failed = numbers.filter { !passed.contains($0) }
        say("\n\(passed.count) of \(numbers.count) exercises pass" +
            (passed.isEmpty ? "" : ": " + passed.map(String.init).joined(separator: ", ")) +
            (failed.isEmpty ? "" : "; to do: " + failed.map(String.init).joined(separator: ", ")) +
            (reference ? " (reference solutions)" : ""))
    }
    exit(passed.count == numbers.count ? 0 : 1)
case "grade-one":   // the child of `check`: one exercise, in this process
    guard arguments.count == 2, let n = Int(arguments[1]) else { fail("grade-one needs one exercise number") }
    exit(gradeHere(exerciseNumbers(String(n))[0], reference: reference) ? 0 : 1)
default:
    fail("unknown command '\(arguments[0])'")
}
