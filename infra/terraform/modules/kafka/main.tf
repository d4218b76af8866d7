# fedstream's five topics, one SCRAM-SHA-512 principal per role and the least-privilege ACLs
# between them (the matrix is in README.md). The broker must run an authorizer with
# allow.everyone.if.no.acl.found=false: a principal not named here can do nothing.

locals {
  roles = toset(["job", "device", "owner", "auditor"])

  # a dead letter carries the whole original record (an update, or a registration) plus
  # its reason and coordinates: the DLQ must take anything the job could have read
  dlq_max_message_bytes = max(var.updates_max_message_bytes, var.control_max_message_bytes) + var.dlq_headroom_bytes

  topics = {
    updates = {
      partitions = var.updates_partitions
      config = {
        "cleanup.policy"    = "delete"
        "retention.ms"      = tostring(var.updates_retention_ms)
        "max.message.bytes" = tostring(var.updates_max_message_bytes)
      }
    }
    # one partition each: every reader sees a model's registrations and releases in order;
    # kept forever (a device joining late replays the registrations and the newest release)
    control = {
      partitions = 1
      config = {
        "cleanup.policy"    = var.control_cleanup_policy
        "retention.ms"      = "-1"
        "max.message.bytes" = tostring(var.control_max_message_bytes)
      }
    }
    models = {
      partitions = 1
      config = {
        "cleanup.policy"    = var.models_cleanup_policy
        "retention.ms"      = "-1"
        "max.message.bytes" = tostring(var.models_max_message_bytes)
      }
    }
    dlq = {
      partitions = 1
      config = {
        "cleanup.policy"    = "delete"
        "retention.ms"      = tostring(var.dlq_retention_ms)
        "max.message.bytes" = tostring(local.dlq_max_message_bytes)
      }
    }
    # the device registry: one DeviceKey per device_id, compacted and kept forever, so the
    # job (reading it from the beginning) knows every device's current key
    devices = {
      partitions = 1
      config = {
        "cleanup.policy" = "compact"
        "retention.ms"   = "-1"
      }
    }
  }
}

# who may do what: the same matrix as the cluster module's KafkaUsers (README.md)
module "matrix" {
  source = "../acl-matrix"

  topics                      = var.topics
  usernames                   = var.usernames
  job_group                   = var.job_group
  job_transactional_id_prefix = var.job_transactional_id_prefix
  device_group_prefix         = var.device_group_prefix
  auditor_group_prefix        = var.auditor_group_prefix
}

resource "kafka_topic" "this" {
  for_each = local.topics

  name               = var.topics[each.key]
  partitions         = each.value.partitions
  replication_factor = var.replication_factor
  config             = merge(each.value.config, { "min.insync.replicas" = tostring(var.min_insync_replicas) })
}

resource "kafka_user_scram_credential" "role" {
  for_each = local.roles

  username         = var.usernames[each.key]
  scram_mechanism  = "SCRAM-SHA-512"
  scram_iterations = var.scram_iterations
  # write-only: sent to the broker, never stored in the plan or the state
  password_wo = var.passwords[each.key]
  # what the state keeps instead, so that a changed password is applied: a SHA-256 of
  # user name and password (the passwords are long random strings, see provision.sh)
  password_wo_version = sha256("${var.usernames[each.key]}:${var.passwords[each.key]}")
}

resource "kafka_acl" "this" {
  for_each = module.matrix.acls

  acl_principal                = each.value.principal
  acl_host                     = var.acl_host
  acl_operation                = each.value.operation
  acl_permission_type          = "Allow"
  resource_type                = each.value.resource_type
  resource_name                = each.value.resource_name
  resource_pattern_type_filter = each.value.pattern_type

  # an ACL for a topic that does not exist yet is legal, but keep the order readable in
  # plans and make destroy remove grants before the things they grant
  depends_on = [kafka_topic.this, kafka_user_scram_credential.role]
}
