/*
 * pg.hpp — the one place where pg_warden includes PostgreSQL's headers.
 *
 * C++ and library headers must be included before this file: port.h
 * redefines snprintf, printf, strerror and friends. Every PostgreSQL header
 * any source needs is listed here, inside one extern "C" block.
 */
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/hashfn.h"
#include "common/ip.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "foreign/fdwapi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "port/pg_bitutils.h"
#include "port/pg_crc32c.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "replication/walsender.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"
#include "pgtime.h"
#include "utils/snapmgr.h"
#include "utils/lsyscache.h"
#include "utils/inval.h"
#include "utils/datetime.h"
#include "storage/fd.h"
#include "commands/trigger.h"
#include "commands/extension.h"
#include "catalog/namespace.h"
}

/*
 * Tripwire for C++-only headers: they include <pg_warden/cpp_only.hpp>,
 * which refuses to compile once postgres.h has been seen.
 */
#define PG_WARDEN_PG_INCLUDED 1
