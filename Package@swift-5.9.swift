// swift-tools-version:5.9
//
// The manifest for Swift 5.9 to 6.1 (6.2 and later read Package.swift, which
// explains the two). Identical to Package.swift except that the `MoE` library
// is built without unsafe flags: before SwiftPM 6.2 a package whose library
// uses them cannot be a dependency resolved by version. On these toolchains,
// build with `swift build -c release` (or `swift run -c release mnist-moe`):
// the library's SIMD kernels are slow in the debug configuration.
//
// The package: one library (`MoE`), executables (`mnist-moe`, `gpt-moe`, `pretrained-moe`,
// `moe-bench`) and one test target. No dependencies: the standard library, Foundation and
// Dispatch only.
//
// The exercises (Notebooks/exercises.md) are four more targets: `Exercises`
// (the skeletons a student edits), `ExerciseSolutions` (reference answers, kept
// apart), `ExerciseGrader` (the checks, and the contract both modules meet) and
// the `exercises` command that runs the checks; `ExerciseTests` grades both.
//
// Why the unsafe flags:
//   * `-O` in every configuration. `swift run mnist-moe`, typed as is, builds
//     the debug configuration, where SIMD code runs hundreds of times slower.
//     The compute code is therefore always optimised; debugging a kernel is
//     still possible by removing this line.
//   * `-target-cpu native` on x86-64. Without a CPU that has FMA, LLVM lowers
//     `SIMD.addProduct` to a library call per lane (~0.8 GFLOP/s instead of
//     ~100). Building for the host CPU makes the binary non-portable, which is
//     fine for a package that is always built from source. arm64 always has FMA.
import PackageDescription

var computeFlags: [SwiftSetting] = [.unsafeFlags(["-O"])]
#if arch(x86_64)
computeFlags.append(.unsafeFlags(["-target-cpu", "native"]))
#endif

let package = Package(
    name: "MoE",
    products: [
        .library(name: "MoE", targets: ["MoE"]),
        .executable(name: "mnist-moe", targets: ["mnist-moe"]),
        .executable(name: "gpt-moe", targets: ["gpt-moe"]),
        .executable(name: "moe-bench", targets: ["moe-bench"]),
        .executable(name: "pretrained-moe", targets: ["pretrained-moe"]),
        .executable(name: "exercises", targets: ["exercises"]),
    ],
    targets: [
        .target(name: "MoE"),   // no unsafe flags: see the top of this file
        .executableTarget(name: "mnist-moe", dependencies: ["MoE", "Exercises"], swiftSettings: computeFlags),
        .executableTarget(name: "gpt-moe", dependencies: ["MoE", "Exercises"], swiftSettings: computeFlags),
        .executableTarget(name: "moe-bench", dependencies: ["MoE"], swiftSettings: computeFlags),
        .executableTarget(name: "pretrained-moe", dependencies: ["MoE"], swiftSettings: computeFlags),
        .testTarget(name: "MoETests", dependencies: ["MoE"], exclude: ["Fixtures"], swiftSettings: computeFlags),
        // Exercises: the grader owns the contract, the two answer modules meet it.
        .target(name: "ExerciseGrader", dependencies: ["MoE"], swiftSettings: computeFlags),
        .target(name: "Exercises", dependencies: ["MoE", "ExerciseGrader"], swiftSettings: computeFlags),
        .target(name: "ExerciseSolutions", dependencies: ["MoE", "ExerciseGrader"], swiftSettings: computeFlags),
        .executableTarget(name: "exercises", dependencies: ["MoE", "ExerciseGrader", "Exercises", "ExerciseSolutions"],
                          swiftSettings: computeFlags),
        .testTarget(name: "ExerciseTests", dependencies: ["ExerciseGrader", "Exercises", "ExerciseSolutions"],
                    swiftSettings: computeFlags),
    ]
)
