# The cluster module with the values an operator must choose; renders the manifests.
#   terraform init && terraform apply   (no provider, nothing leaves this machine)
#   terraform output -raw manifests_yaml > fedstream.yaml
module "cluster" {
  source = "../.."

  job_image      = "registry.example.com/fedstream/job:0.1.0"
  checkpoint_dir = "s3://fedstream-state/checkpoints"
  savepoint_dir  = "s3://fedstream-state/savepoints"
  ha_dir         = "s3://fedstream-state/ha"
}

output "manifests" {
  value = module.cluster.manifests
}

output "manifests_yaml" {
  value = module.cluster.manifests_yaml
}
