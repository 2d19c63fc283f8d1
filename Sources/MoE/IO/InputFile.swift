// InputFile: reading a whole file that a user named, with errors that say
// what is actually wrong.
//
// `Data(contentsOf:)` alone turns every failure into a Cocoa error: an empty
// path becomes "NSCocoaErrorDomain error 256", and a device such as /dev/zero
// is reported as a permission problem (or, worse, read until memory runs out:
// it never ends). Every file this project reads (checkpoints, resume files,
// corpora, MNIST) goes through `InputFile.read`, which checks first that the
// path names a regular file, then reads it, and on failure says why in words:
// "no such file", "is a folder", "is not a regular file (a character device)",
// "permission denied".
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

public enum InputFile {
    /// What is wrong with `path` as a file to read, or nil if it is a readable regular file.
    public static func problem(with path: String) -> String? {
        guard !path.isEmpty else { return "an empty path names no file" }
        var info = stat()
        guard stat(path, &info) == 0 else {
            return errno == ENOENT || errno == ENOTDIR ? "no such file" : "cannot open (\(String(cString: strerror(errno))))"
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return "is a folder, not a file"
        case S_IFCHR: return "is not a regular file (a character device)"
        case S_IFBLK: return "is not a regular file (a block device)"
        case S_IFIFO: return "is not a regular file (a pipe)"
        case S_IFSOCK: return "is not a regular file (a socket)"
        default: return "is not a regular file"
        }
        if access(path, R_OK) != 0 { return "cannot be read (\(String(cString: strerror(errno))))" }
        return nil
    }

    /// The bytes of the regular file at `url`.
    /// - Throws: `InputFileError` naming the path and the problem.
    public static func read(_ url: URL, mapped: Bool = false) throws -> Data {
        let path = url.path
        // An empty --flag value reaches us as URL(fileURLWithPath: ""), the current folder.
        if let problem = problem(with: path) { throw InputFileError(path: path, problem: problem) }
        do {
            return try Data(contentsOf: url, options: mapped ? .mappedIfSafe : [])
        } catch {
            let reason = error.localizedDescription.split(whereSeparator: \.isNewline).joined(separator: " ")
            throw InputFileError(path: path, problem: "cannot read (\(reason))")
        }
    }
}

/// A file that cannot be read, as one line: "PATH: problem".
public struct InputFileError: Error, CustomStringConvertible, LocalizedError {
    public var path: String
    public var problem: String
    public var description: String { "\(path): \(problem)" }
    public var errorDescription: String? { description }
}
