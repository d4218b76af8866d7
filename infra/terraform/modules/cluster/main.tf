# fedstream on Kubernetes, as manifests: Kafka through Strimzi 1.2 (KRaft, one dual-role
# KafkaNodePool, the five topics as KafkaTopics, one SCRAM-SHA-512 KafkaUser per role with
# the ACL matrix of modules/acl-matrix) and the job through the Flink Kubernetes Operator
# (a FlinkDeployment running the PyFlink job in application mode).
#
# No provider: the manifests are rendered with Terraform's own functions and returned as
# outputs, for kubernetes_manifest, kubectl or GitOps (README.md). Nothing here talks to a
# cluster.

locals {
  kafka_ca_dir   = "/etc/fedstream/kafka-ca"
  kafka_user_dir = "/etc/fedstream/kafka-user"

  labels = {
    "app.kubernetes.io/part-of"    = "fedstream"
    "app.kubernetes.io/managed-by" = "terraform"
  }
  strimzi_labels = merge(local.labels, { "strimzi.io/cluster" = var.cluster_name })

  bootstrap = "${var.cluster_name}-kafka-bootstrap.${var.namespace}.svc:9093"
  dlq_max   = max(var.max_message_bytes.updates, var.max_message_bytes.control) + var.dlq_headroom_bytes
  # the broker-wide limit must let the largest topic limit through
  broker_max = max(var.max_message_bytes.models, local.dlq_max)

  kafka = {
    apiVersion = "kafka.strimzi.io/v1"
    kind       = "Kafka"
    metadata   = { name = var.cluster_name, namespace = var.namespace, labels = local.labels }
    spec = {
      kafka = {
        version = var.kafka_version
        listeners = [{
          name           = "tls"
          port           = 9093
          type           = "internal"
          tls            = true
          authentication = { type = "scram-sha-512" }
        }]
        # Strimzi's simple authorization is Kafka's StandardAuthorizer in KRaft; no super
        # user besides Strimzi's own operators
        authorization = { type = "simple" }
        config = {
          "allow.everyone.if.no.acl.found"           = false
          "auto.create.topics.enable"                = false
          "default.replication.factor"               = var.replication_factor
          "min.insync.replicas"                      = var.min_insync_replicas
          "offsets.topic.replication.factor"         = var.replication_factor
          "transaction.state.log.replication.factor" = var.replication_factor
          "transaction.state.log.min.isr"            = var.min_insync_replicas
          # Flink's exactly-once sink keeps transactions open up to a checkpoint + restart
          "transaction.max.timeout.ms" = 3600000
          "message.max.bytes"          = local.broker_max
          "replica.fetch.max.bytes"    = local.broker_max
        }
      }
      entityOperator = {
        topicOperator = {}
        userOperator  = {}
      }
    }
  }

  node_pool = {
    apiVersion = "kafka.strimzi.io/v1"
    kind       = "KafkaNodePool"
    metadata   = { name = "${var.cluster_name}-dual", namespace = var.namespace, labels = local.strimzi_labels }
    spec = {
      replicas = var.kafka_replicas
      roles    = ["controller", "broker"]
      storage = {
        type = "jbod"
        volumes = [merge(
          {
            id            = 0
            type          = "persistent-claim"
            size          = var.kafka_storage_size
            deleteClaim   = false
            kraftMetadata = "shared"
          },
          var.kafka_storage_class == null ? {} : { class = var.kafka_storage_class },
        )]
      }
      resources = var.kafka_resources
    }
  }

  topic_specs = {
    updates = {
      partitions = var.updates_partitions
      config = {
        "cleanup.policy"    = "delete"
        "retention.ms"      = var.updates_retention_ms
        "max.message.bytes" = var.max_message_bytes.updates
      }
    }
    control = {
      partitions = 1
      config = {
        "cleanup.policy"    = var.control_cleanup_policy
        "retention.ms"      = -1
        "max.message.bytes" = var.max_message_bytes.control
      }
    }
    models = {
      partitions = 1
      config = {
        "cleanup.policy"    = var.models_cleanup_policy
        "retention.ms"      = -1
        "max.message.bytes" = var.max_message_bytes.models
      }
    }
    dlq = {
      partitions = 1
      config = {
        "cleanup.policy"    = "delete"
        "retention.ms"      = var.dlq_retention_ms
        "max.message.bytes" = local.dlq_max
      }
    }
    # the device registry: one DeviceKey per device_id, compacted and kept forever, so the
    # job (reading it from the beginning) knows every device's current key
    devices = {
      partitions = 1
      config = {
        "cleanup.policy" = "compact"
        "retention.ms"   = -1
      }
    }
  }

  topics = [
    for role in ["updates", "control", "models", "dlq", "devices"] : {
      apiVersion = "kafka.strimzi.io/v1"
      kind       = "KafkaTopic"
      metadata   = { name = var.topics[role], namespace = var.namespace, labels = local.strimzi_labels }
      spec = {
        topicName  = var.topics[role]
        partitions = local.topic_specs[role].partitions
        replicas   = var.replication_factor
        config     = merge(local.topic_specs[role].config, { "min.insync.replicas" = var.min_insync_replicas })
      }
    }
  ]

  strimzi_resource_type = { Topic = "topic", Group = "group", TransactionalID = "transactionalId" }
  strimzi_pattern_type  = { Literal = "literal", Prefixed = "prefix" }

  users = [
    for role in ["job", "device", "owner", "auditor"] : {
      apiVersion = "kafka.strimzi.io/v1"
      kind       = "KafkaUser"
      metadata   = { name = var.usernames[role], namespace = var.namespace, labels = local.strimzi_labels }
      spec = {
        # Strimzi's User Operator generates the password into Secret <user name>, key
        # "password" (and "sasl.jaas.config" for Java clients)
        authentication = { type = "scram-sha-512" }
        authorization = {
          type = "simple"
          acls = [
            for grant in module.matrix.grants[role] : {
              type = "allow"
              host = "*"
              resource = {
                type        = local.strimzi_resource_type[grant.type]
                name        = grant.name
                patternType = local.strimzi_pattern_type[grant.pattern]
              }
              operations = grant.operations
            }
          ]
        }
      }
    }
  ]

  job_overrides = merge(
    {
      "kafka.bootstrap"               = local.bootstrap
      "kafka.group_id"                = var.job_group
      "kafka.transactional_id_prefix" = var.job_transactional_id_prefix
      # the job logs in as the job principal, with the password and CA Strimzi provides
      "kafka.security_protocol"  = "SASL_SSL"
      "kafka.sasl_mechanism"     = "SCRAM-SHA-512"
      "kafka.username"           = var.usernames.job
      "kafka.password_file"      = "${local.kafka_user_dir}/password"
      "kafka.ca_file"            = "${local.kafka_ca_dir}/ca.crt"
      "topics.updates"           = var.topics.updates
      "topics.control"           = var.topics.control
      "topics.models"            = var.topics.models
      "topics.dlq"               = var.topics.dlq
      "topics.devices"           = var.topics.devices
      "topics.partitions"        = tostring(var.updates_partitions)
      "checkpoint.dir"           = var.checkpoint_dir
      "checkpoint.interval_ms"   = tostring(var.checkpoint_interval_ms)
      "checkpoint.backend"       = var.state_backend
      "runtime.parallelism"      = tostring(var.parallelism)
      "runtime.restart_attempts" = tostring(var.restart_attempts)
      "runtime.restart_delay_ms" = tostring(var.restart_delay_ms)
    },
    var.extra_job_settings,
  )

  job_args = concat(
    [
      "-py", "${var.job_code_dir}/jobs/fedstream/jobs/aggregation_job.py",
      "-pyfs", join(",", [for d in ["schemas", "pipelines", "jobs"] : "${var.job_code_dir}/${d}"]),
      "--config", var.job_config_file,
    ],
    flatten([for key in sort(keys(local.job_overrides)) : ["--set", "${key}=${local.job_overrides[key]}"]]),
  )

  flink_deployment = {
    apiVersion = "flink.apache.org/v1beta1"
    kind       = "FlinkDeployment"
    metadata   = { name = var.job_name, namespace = var.namespace, labels = local.labels }
    spec = {
      image          = var.job_image
      flinkVersion   = var.flink_version
      serviceAccount = var.service_account
      # Flink 2.x option names; the job's own settings (--set) say the same for its graph
      flinkConfiguration = {
        "taskmanager.numberOfTaskSlots"                             = tostring(var.task_slots)
        "state.backend.type"                                        = var.state_backend
        "execution.checkpointing.dir"                               = var.checkpoint_dir
        "execution.checkpointing.savepoint-dir"                     = var.savepoint_dir
        "execution.checkpointing.interval"                          = "${var.checkpoint_interval_ms}ms"
        "execution.checkpointing.mode"                              = "EXACTLY_ONCE"
        "execution.checkpointing.externalized-checkpoint-retention" = "RETAIN_ON_CANCELLATION"
        "execution.checkpointing.num-retained"                      = "3"
        "restart-strategy.type"                                     = "fixed-delay"
        "restart-strategy.fixed-delay.attempts"                     = tostring(var.restart_attempts)
        "restart-strategy.fixed-delay.delay"                        = "${var.restart_delay_ms}ms"
        "high-availability.type"                                    = "kubernetes"
        "high-availability.storageDir"                              = var.ha_dir
        "python.execution-mode"                                     = "thread"
        "python.fn-execution.bundle.size"                           = "100"
      }
      jobManager = {
        replicas = 1
        resource = var.jobmanager_resources
      }
      taskManager = {
        resource = var.taskmanager_resources
      }
      # the job principal's password and the cluster CA, as files (kafka.password_file and
      # kafka.ca_file in the job's arguments)
      podTemplate = {
        apiVersion = "v1"
        kind       = "Pod"
        metadata   = { labels = local.labels }
        spec = {
          containers = [{
            name = "flink-main-container"
            volumeMounts = [
              { name = "kafka-ca", mountPath = local.kafka_ca_dir, readOnly = true },
              { name = "kafka-user", mountPath = local.kafka_user_dir, readOnly = true },
            ]
          }]
          volumes = [
            # Strimzi's cluster CA certificate and the Secret its User Operator writes
            { name = "kafka-ca", secret = { secretName = "${var.cluster_name}-cluster-ca-cert", items = [{ key = "ca.crt", path = "ca.crt" }] } },
            { name = "kafka-user", secret = { secretName = var.usernames.job, items = [{ key = "password", path = "password" }] } },
          ]
        }
      }
      job = {
        jarURI                = var.flink_python_jar
        entryClass            = "org.apache.flink.client.python.PythonDriver"
        args                  = local.job_args
        parallelism           = var.parallelism
        upgradeMode           = var.upgrade_mode
        state                 = "running"
        allowNonRestoredState = false
      }
    }
  }

  # in the order they can be applied: the cluster, its nodes, then what lives in it
  manifests = concat([local.kafka, local.node_pool], local.topics, local.users, [local.flink_deployment])
}

# who may do what: the same matrix as modules/kafka's kafka_acl resources
module "matrix" {
  source = "../acl-matrix"

  topics                      = var.topics
  usernames                   = var.usernames
  job_group                   = var.job_group
  job_transactional_id_prefix = var.job_transactional_id_prefix
  device_group_prefix         = var.device_group_prefix
  auditor_group_prefix        = var.auditor_group_prefix
}
