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
// command `grade-one`), so that a crash in your code — a failed precondition,
// an index out of range — ends that exercise, is reported in words (with the
// check that was running, then a few lines of backtrace), and the others are
// still graded. A child still running after 5 s says which check it is in; at
// the time limit (30 s; the slowest exercise takes about a second) it is
// stopped and reported with that check: an endless loop. GradingProcess.swift
// does both.
import Foundation
import ExerciseGrader
import Exercises
import ExerciseSolutions
import MoE

let usage = """
usage: exercises list
       exercises check N|all [--reference] [--time-limit S]

  list            the exercises, their difficulty and the file each one edits
  check N         grade exercise N (1–\(Grader.exercises.count)) in Sources/Exercises
  check all       grade every exercise
  --reference     grade the reference solutions in Sources/ExerciseSolutions instead
  --time-limit S  stop an exercise after S seconds (default 30)
  grade-one N     grade exercise N in this process, without the crash and time-limit
                  guard (a crash then prints the runtime's whole backtrace)
The exercises are set in Notebooks/exercises.md.
"""

/// Seconds one exercise may take by default (the slowest takes about a second).
let defaultTimeLimit = 30.0

/// One line, a pointer to the usage, status 2.
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("exercises: \(message) (exercises --help shows the usage)\n".utf8))
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
func gradeInChild(_ number: Int, reference: Bool, timeLimit: Double) -> Bool {
    guard let program = Bundle.main.executableURL,
          let outcome = GradingProcess.run(program, arguments: ["grade-one", String(number), "--announce"]
                                           + (reference ? ["--reference"] : []), timeLimit: timeLimit,
                                           onSlow: { check in
                                               say("exercise \(number): still running after 5 s" +
                                                   (check.map { " in the check '\($0)'" } ?? "") +
                                                   "; stopping it at \(String(format: "%g", timeLimit)) s")
                                           })
    else { return gradeHere(number, reference: reference) }
    if let report = GradingProcess.failureReport(exercise: number, outcome) {
        say(report)
        return false
    }
    FileHandle.standardOutput.write(Data(outcome.standardOutput.utf8))
    if !outcome.standardError.isEmpty { FileHandle.standardError.write(Data((outcome.standardError + "\n").utf8)) }
    return outcome.ending == .exited(0)
}

// MARK: - The command line

var arguments: [String] = []
var reference = false, announce = false
var timeLimit = defaultTimeLimit
var reader = ArgumentReader(Array(CommandLine.arguments.dropFirst()))
let knownFlags = ["--reference", "--time-limit", "--help"]
do {
    while let word = reader.next() {
        switch word {
        case "--reference": reference = true
        case "--announce": announce = true   // grade-one, as check's child: name each check on stderr
        case "--time-limit": timeLimit = Double(try reader.float(word, 1...3600))
        case "-h", "--help", "help": arguments.insert("--help", at: 0)
        default:
            if word.hasPrefix("-") { throw UsageError.unknownOption(word, known: knownFlags) }
            arguments.append(word)
        }
    }
} catch {
    fail("\(error)")
}

switch arguments.first {
case nil:
    fail("missing command: list, check N or check all")
case "--help":
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
        if gradeInChild(n, reference: reference, timeLimit: timeLimit) { passed.append(n) }
    }
    if numbers.count > 1 {
        let failed = numbers.filter { !passed.contains($0) }
        say("\n\(passed.count) of \(numbers.count) exercises pass" +
            (passed.isEmpty ? "" : ": " + passed.map(String.init).joined(separator: ", ")) +
            (failed.isEmpty ? "" : "; to do: " + failed.map(String.init).joined(separator: ", ")) +
            (reference ? " (reference solutions)" : ""))
    }
    exit(passed.count == numbers.count ? 0 : 1)
case "grade-one":   // one exercise, in this process (check's child, or by hand for the whole backtrace)
    guard arguments.count == 2, let n = Int(arguments[1]) else { fail("grade-one needs one exercise number") }
    if announce {
        Grader.checkWillRun = GradingProcess.announce
        Grader.checkDidRun = GradingProcess.announceFinished
    }
    exit(gradeHere(exerciseNumbers(String(n))[0], reference: reference) ? 0 : 1)
default:
    let commands = ["list", "check", "grade-one"]
    fail("unknown command '\(arguments[0])'" + (nearMiss(arguments[0], in: commands).map { "; did you mean \($0)?" } ?? ""))
}
