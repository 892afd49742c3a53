#pragma once
// Names that become one component of a path under $MUGV_HOME (datasets/<name>/..., caches, exports): a name
// from a user or a client must never reach another folder. Pure functions; thread-safe.

#include <string>

namespace mugv {

// Throws Error(invalid_argument) with the name as subject when it is empty, "." or "..", longer than 200
// bytes, or holds '/', '\\', or a control character: "a dataset name cannot contain '/'". `what` names the
// kind of thing ("dataset").
void check_path_component_name(const std::string& name, const std::string& what);

}  // namespace mugv
