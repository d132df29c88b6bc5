// Umbrella header for keel::storage.
#pragma once

#include "keel/storage/conninfo.hpp"
#include "keel/storage/embedded_postgres.hpp"
#include "keel/storage/error.hpp"
#include "keel/storage/records.hpp"
#include "keel/storage/store.hpp"
