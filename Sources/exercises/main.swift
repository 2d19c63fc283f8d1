import Foundation
import ExerciseGrader
import ExerciseSolutions
for n in 1...6 { print(Grader.grade(n, ReferenceSubmission())) }
